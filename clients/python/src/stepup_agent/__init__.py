"""Python client of stepup-agent, the per-user step-up authentication agent.

    from stepup_agent import Client

    agent = Client()
    if agent.is_step_up_required("wallet:export"):       # fails closed
        agent.prompt_step_up_auth(["wallet:export"])     # the agent prompts
    token = agent.get_token("wallet:export")

Standard library only; ``stepup_agent.http`` answers RFC 9470 challenges
for urllib (and requests, when installed).
"""

from .client import Challenge, Client, StepUpRequired, TokenResult, check_socket_owner, default_socket_path, socket_path
from .errors import (AgentError, CancelledError, DialError, ForbiddenError, LockedError, NoPrompterError,
                     NotEnrolledError, RateLimitedError, StepUpError, TimeoutError, TokenInvalidError,
                     UnknownScopeError, VerificationFailedError, WrongOwnerError)

__all__ = [
    "AgentError", "CancelledError", "Challenge", "Client", "DialError", "ForbiddenError", "LockedError",
    "NoPrompterError", "NotEnrolledError", "RateLimitedError", "StepUpError", "StepUpRequired", "TimeoutError",
    "TokenInvalidError", "TokenResult", "UnknownScopeError", "VerificationFailedError", "WrongOwnerError",
    "check_socket_owner", "default_socket_path", "socket_path",
]
