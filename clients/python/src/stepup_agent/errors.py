"""Errors of the stepup-agent client, one class per wire code (docs/protocol.md)."""

from __future__ import annotations

from typing import Any, Dict, Optional, Type

# Wire codes (DESIGN.md, "Error objects").
CANCELLED = 4001
VERIFICATION_FAILED = 4002
RATE_LIMITED = 4003
TIMEOUT = 4004
FORBIDDEN = 4005
NOT_ENROLLED = 4006
TOKEN_INVALID = 4007
UNKNOWN_SCOPE = 4008
NO_PROMPTER = 4009
LOCKED = 4010
KEYCHAIN_FAILED = 4011  # the keychain could not store the change (a full disk)


class StepUpError(Exception):
    """Any failure of a call to the agent."""


class DialError(StepUpError):
    """The agent could not be reached, or its socket is not to be trusted."""

    def __init__(self, socket_path: str, reason: str) -> None:
        super().__init__(f"cannot reach stepup-agent at {socket_path}: {reason}")
        self.socket_path = socket_path
        self.reason = reason

    @property
    def hint(self) -> str:
        return ('start an agent with: eval "$(stepup-agent)" (or: systemctl --user start stepup-agent.socket), '
                "and check that STEPUP_AUTH_SOCK names its socket")


class WrongOwnerError(DialError):
    """The socket, its directory or the process serving it is not this user's.

    Another local user can create /tmp/stepup-UID first; an agent of theirs
    would be handed the codes this client sends, so the client refuses.
    """

    @property
    def hint(self) -> str:
        return ("another user's program or directory is in the way: do not use it; point STEPUP_AUTH_SOCK at your own "
                "agent's socket (with XDG_RUNTIME_DIR set, the default is a private directory)")


class AgentError(StepUpError):
    """The agent answered with a JSON-RPC error object."""

    code: int
    reason: str
    data: Dict[str, Any]

    def __init__(self, code: int, message: str, data: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data or {}
        self.reason = str(self.data.get("reason", ""))

    @property
    def hint(self) -> str:
        return str(self.data.get("hint", ""))


class CancelledError(AgentError):
    """4001: the user dismissed the prompt."""


class VerificationFailedError(AgentError):
    """4002: a wrong or replayed code, a bad signature or assertion."""


class RateLimitedError(AgentError):
    """4003: too many failures; retry_after_seconds says when to try again."""

    @property
    def retry_after_seconds(self) -> int:
        return int(self.data.get("retryAfterSeconds", 0))


class TimeoutError(AgentError):  # noqa: A001 - the wire name
    """4004: nobody answered the prompt in time."""


class ForbiddenError(AgentError):
    """4005: this client may not use this scope or method."""


class NotEnrolledError(AgentError):
    """4006: no credential for the requested route or method."""


class TokenInvalidError(AgentError):
    """4007: bad signature, expired, consumed, wrong scope, or not this caller's."""


class UnknownScopeError(AgentError):
    """4008: the policy denies scopes it does not name."""


class NoPrompterError(AgentError):
    """4009: no way to show a prompt here; use start_verification/complete_verification."""


class LockedError(AgentError):
    """4010: the agent is locked (screen lock, sleep, stepupctl lock)."""


_BY_CODE: Dict[int, Type[AgentError]] = {
    CANCELLED: CancelledError,
    VERIFICATION_FAILED: VerificationFailedError,
    RATE_LIMITED: RateLimitedError,
    TIMEOUT: TimeoutError,
    FORBIDDEN: ForbiddenError,
    NOT_ENROLLED: NotEnrolledError,
    TOKEN_INVALID: TokenInvalidError,
    UNKNOWN_SCOPE: UnknownScopeError,
    NO_PROMPTER: NoPrompterError,
    LOCKED: LockedError,
}


def from_wire(obj: Dict[str, Any]) -> AgentError:
    """Turn a JSON-RPC error object into the matching exception."""
    code = int(obj.get("code", 0))
    data = obj.get("data")
    cls = _BY_CODE.get(code, AgentError)
    return cls(code, str(obj.get("message", "")), data if isinstance(data, dict) else None)
