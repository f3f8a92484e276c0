"""The client of stepup-agent over its Unix socket (docs/protocol.md).

JSON-RPC 2.0, one object per line. Each call opens its own connection
after checking that the socket and its directory belong to this user and
that the process serving it runs as this user (SO_PEERCRED), so that codes
and passwords never go to another user's program.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .errors import DialError, StepUpError, TokenInvalidError, WrongOwnerError, from_wire

MAX_LINE = 64 * 1024
ENV_SOCKET = "STEPUP_AUTH_SOCK"


def default_socket_path() -> str:
    """$XDG_RUNTIME_DIR/stepup/agent.sock, else $TMPDIR/stepup-$UID/agent.sock."""
    run = os.environ.get("XDG_RUNTIME_DIR")
    if run:
        return os.path.join(run, "stepup", "agent.sock")
    tmp = os.environ.get("TMPDIR") or "/tmp"
    return os.path.join(tmp, f"stepup-{os.getuid()}", "agent.sock")


def socket_path() -> str:
    """$STEPUP_AUTH_SOCK, else the default path."""
    return os.environ.get(ENV_SOCKET) or default_socket_path()


@dataclass(frozen=True)
class StepUpRequired:
    """The result of isStepUpRequired."""

    required: bool
    scope: str
    methods: List[str] = field(default_factory=list)
    default_method: str = ""
    expires_at: str = ""
    credentials: List[Dict[str, Any]] = field(default_factory=list)
    locked: bool = False


@dataclass(frozen=True)
class TokenResult:
    """An elevated access token the agent minted (times are RFC 3339 strings)."""

    token: str
    scopes: List[str]
    expires_at: str
    single_use: bool
    method: str = ""

    def __repr__(self) -> str:  # never print the token itself
        return f"TokenResult(scopes={self.scopes!r}, expires_at={self.expires_at!r}, single_use={self.single_use}, method={self.method!r})"


@dataclass(frozen=True)
class Challenge:
    """The result of startVerification: what a custom UI shows the user."""

    challenge_id: str
    method: str
    expires_at: str
    challenge: Dict[str, Any]


def _token_result(r: Mapping[str, Any]) -> TokenResult:
    return TokenResult(token=str(r["token"]), scopes=list(r.get("scopes") or []), expires_at=str(r.get("expiresAt", "")),
                       single_use=bool(r.get("singleUse")), method=str(r.get("method", "")))


class Client:
    """The client of stepup-agent; its vocabulary is Dynamic's step-up API.

    ``socket`` is the agent's socket; None means $STEPUP_AUTH_SOCK or the
    default path. ``timeout`` bounds calls that do not prompt (seconds);
    prompting calls wait for the user, up to the agent's prompt timeout.
    """

    def __init__(self, socket: Optional[str] = None, timeout: float = 10.0) -> None:
        self.socket = socket
        self.timeout = timeout
        self._next = 0

    # The five calls of the seed's API.

    def is_step_up_required(self, scope: str) -> bool:
        """Whether ``scope`` needs a step-up now. Fails closed: any error,
        an unreachable agent included, answers True."""
        try:
            return self.check_step_up(scope).required
        except Exception:  # noqa: BLE001 - fail closed, whatever went wrong
            return True

    def prompt_step_up_auth(self, requested_scopes: Sequence[str], method: str = "", reason: str = "",
                            timeout_seconds: int = 0) -> TokenResult:
        """Verify the user (MFA when they have an MFA credential, else
        re-authentication) and return the token for ``requested_scopes``."""
        return self._prompt("promptStepUpAuth", requested_scopes, method, reason, timeout_seconds)

    def prompt_mfa(self, requested_scopes: Sequence[str], method: str = "", reason: str = "",
                   timeout_seconds: int = 0) -> TokenResult:
        """Verify the user with an MFA method (totp, passkey, recovery_code)."""
        return self._prompt("promptMfa", requested_scopes, method, reason, timeout_seconds)

    def prompt_reauthenticate(self, requested_scopes: Sequence[str], method: str = "", reason: str = "",
                              timeout_seconds: int = 0) -> TokenResult:
        """Verify the user with a re-authentication method (password, email_otp, sms_otp, wallet)."""
        return self._prompt("promptReauthenticate", requested_scopes, method, reason, timeout_seconds)

    def reset_state(self, scopes: Optional[Sequence[str]] = None) -> int:
        """Forget held tokens (all without ``scopes``); returns how many."""
        params: Dict[str, Any] = {}
        if scopes:
            params["scopes"] = list(scopes)
        return int(self.call("resetState", params).get("revoked", 0))

    # Custom UI: the application collects the answer itself.

    def start_verification(self, method: str, requested_scopes: Sequence[str]) -> Challenge:
        """Begin a verification by ``method`` for ``requested_scopes``; for
        totp and recovery_code the challenge is {} and the response {code}."""
        r = self.call("startVerification", {"method": method, "requestedScopes": list(requested_scopes)})
        return Challenge(challenge_id=str(r["challengeId"]), method=str(r.get("method", method)),
                         expires_at=str(r.get("expiresAt", "")), challenge=dict(r.get("challenge") or {}))

    def complete_verification(self, challenge_id: str, response: Mapping[str, Any]) -> TokenResult:
        """Answer a challenge (e.g. {"code": "123456"}) and get the token."""
        return _token_result(self.call("completeVerification", {"challengeId": challenge_id, "response": dict(response)}))

    # The rest of the protocol.

    def check_step_up(self, scope: str) -> StepUpRequired:
        """isStepUpRequired with everything it answers; raises on errors."""
        r = self.call("isStepUpRequired", {"scope": scope})
        return StepUpRequired(required=bool(r.get("required", True)), scope=str(r.get("scope", scope)),
                              methods=list(r.get("methods") or []), default_method=str(r.get("defaultMethod", "")),
                              expires_at=str(r.get("expiresAt", "")), credentials=list(r.get("credentials") or []),
                              locked=bool(r.get("locked", False)))

    def get_token(self, scope: str) -> Optional[TokenResult]:
        """The held token for ``scope`` this caller may use, or None."""
        try:
            r = self.call("getToken", {"scope": scope})
        except TokenInvalidError:
            return None
        return TokenResult(token=str(r["token"]), scopes=list(r.get("scopes") or []),
                           expires_at=str(r.get("expiresAt", "")), single_use=bool(r.get("singleUse")))

    def verify_token(self, token: str, scope: str, consume: bool = False) -> Dict[str, Any]:
        """Verify a token for a relying party; returns its claims, raises
        TokenInvalidError when it is not valid."""
        return dict(self.call("verifyToken", {"token": token, "scope": scope, "consume": consume}).get("claims") or {})

    def status(self) -> Dict[str, Any]:
        return self.call("status", {})

    def _prompt(self, rpc: str, scopes: Sequence[str], method: str, reason: str, timeout_seconds: int) -> TokenResult:
        if isinstance(scopes, str):
            raise TypeError("requested_scopes is a list of scopes, not one string")
        params: Dict[str, Any] = {"requestedScopes": list(scopes)}
        if method:
            params["method"] = method
        if reason:
            params["reason"] = reason
        if timeout_seconds:
            params["timeoutSeconds"] = timeout_seconds
        params.update(_prompt_env())
        return _token_result(self.call(rpc, params, prompting=True))

    # The wire.

    def call(self, method: str, params: Mapping[str, Any], prompting: bool = False) -> Dict[str, Any]:
        """Send one JSON-RPC request and return its result object."""
        path = self.socket or socket_path()
        conn = _connect(path, None if prompting else self.timeout)
        try:
            self._next += 1
            req = {"jsonrpc": "2.0", "id": self._next, "method": method, "params": dict(params)}
            conn.sendall(json.dumps(req, separators=(",", ":")).encode() + b"\n")
            line = _read_line(conn)
        except OSError as e:
            raise DialError(path, f"{method}: {e}") from e
        finally:
            conn.close()
        try:
            resp = json.loads(line)
        except ValueError as e:
            raise StepUpError(f"stepup-agent sent a line that is not JSON: {e}") from e
        if not isinstance(resp, dict):
            raise StepUpError("stepup-agent sent an answer that is not an object")
        if resp.get("error") is not None:
            raise from_wire(resp["error"])
        result = resp.get("result")
        if not isinstance(result, dict):
            raise StepUpError(f"stepup-agent answered {method} without a result object")
        return result


def _prompt_env() -> Dict[str, str]:
    """Where this process sits, so the prompt reaches the user there."""
    env: Dict[str, str] = {}
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd):
                env["tty"] = os.ttyname(fd)
                break
        except OSError:
            pass
    for key, var in (("term", "TERM"), ("display", "DISPLAY"), ("waylandDisplay", "WAYLAND_DISPLAY")):
        if os.environ.get(var):
            env[key] = os.environ[var]
    lang = os.environ.get("LC_ALL") or os.environ.get("LC_CTYPE") or os.environ.get("LANG")
    if lang:
        env["lang"] = lang
    return env


def check_socket_owner(path: str) -> None:
    """Refuse a socket that is not this user's: its directory must be a
    real directory of this user that nobody else may write to, the socket
    a socket of this user (lstat: symlinks are not followed)."""
    uid = os.getuid()
    directory = os.path.dirname(os.path.abspath(path))
    try:
        d = os.lstat(directory)
    except OSError as e:
        raise DialError(path, f"{directory}: {e.strerror}") from e
    if not stat.S_ISDIR(d.st_mode):
        raise WrongOwnerError(path, f"{directory} is not a directory")
    if d.st_uid != uid:
        raise WrongOwnerError(path, f"{directory} belongs to uid {d.st_uid}, not to you (uid {uid})")
    if d.st_mode & 0o022:
        raise WrongOwnerError(path, f"{directory} has mode {stat.S_IMODE(d.st_mode):04o}: others can write to it")
    try:
        s = os.lstat(path)
    except OSError as e:
        raise DialError(path, e.strerror or str(e)) from e
    if not stat.S_ISSOCK(s.st_mode):
        raise WrongOwnerError(path, "not a socket")
    if s.st_uid != uid:
        raise WrongOwnerError(path, f"the socket belongs to uid {s.st_uid}, not to you (uid {uid})")


def _peer_uid(conn: socket.socket) -> Optional[int]:
    """The uid of the process serving the socket, where the OS tells it."""
    if sys.platform.startswith("linux"):
        cred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", cred)
        return uid
    getpeereid = getattr(conn, "getpeereid", None)  # not in CPython; BSD/macOS builds may add it
    if getpeereid is not None:
        return int(getpeereid()[0])
    return None


def _connect(path: str, timeout: Optional[float]) -> socket.socket:
    check_socket_owner(path)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        conn.connect(path)
        uid = _peer_uid(conn)
    except OSError as e:
        conn.close()
        raise DialError(path, e.strerror or str(e)) from e
    if uid is not None and uid != os.getuid():
        conn.close()
        raise WrongOwnerError(path, f"the socket is served by uid {uid}, not by you (uid {os.getuid()}): refusing to talk to it")
    return conn


def _read_line(conn: socket.socket) -> bytes:
    buf = bytearray()
    while True:
        i = buf.find(b"\n")
        if i >= 0:
            return bytes(buf[:i])
        if len(buf) > MAX_LINE:
            raise StepUpError("stepup-agent sent a line over 64 KiB")
        chunk = conn.recv(65536)
        if not chunk:
            raise StepUpError("stepup-agent closed the connection before answering")
        buf += chunk
