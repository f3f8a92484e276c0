"""Answer RFC 9470 step-up challenges from HTTP servers, with urllib or requests.

A server that wants a fresher or stronger authentication answers 401 with

    WWW-Authenticate: Bearer error="insufficient_user_authentication", scope="wallet:export", max_age=300

The helpers here then get a token for those scopes from the agent (a held
one when it covers them, is recent enough for max_age and, if single-use,
was never sent; otherwise a step-up), attach it in the ``X-Elevated-Token``
header (or ``Authorization: Bearer``) and send the request once more, as
ipc/stepup/stephttp's Transport does for Go.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from .client import Client, TokenResult
from .errors import StepUpError

DEFAULT_HEADER = "X-Elevated-Token"
INSUFFICIENT_USER_AUTHENTICATION = "insufficient_user_authentication"

StepUp = Callable[[List[str]], TokenResult]


@dataclass(frozen=True)
class Challenge:
    """A Bearer challenge of a WWW-Authenticate header (RFC 6750, RFC 9470)."""

    error: str = ""
    description: str = ""
    scopes: List[str] = field(default_factory=list)
    acr_values: List[str] = field(default_factory=list)
    max_age: Optional[int] = None

    @property
    def step_up_requested(self) -> bool:
        return self.error == INSUFFICIENT_USER_AUTHENTICATION


_PARAM = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


def parse_challenge(headers: Sequence[str]) -> Optional[Challenge]:
    """The first Bearer challenge among WWW-Authenticate values, or None."""
    for value in headers:
        m = re.search(r"(?i)(?:^|,)\s*bearer(?:\s+|$)", value)
        if not m:
            continue
        params: Dict[str, str] = {}
        rest = value[m.end():]
        pos = 0
        while pos < len(rest):
            pm = _PARAM.match(rest, pos)
            if not pm or pm.end() == pos:
                break
            raw = pm.group(2)
            params[pm.group(1).lower()] = re.sub(r"\\(.)", r"\1", raw) if raw is not None else (pm.group(3) or "")
            pos = pm.end()
        max_age: Optional[int] = None
        if params.get("max_age", "").isdigit():
            max_age = int(params["max_age"])
        return Challenge(error=params.get("error", ""), description=params.get("error_description", ""),
                         scopes=params.get("scope", "").split(), acr_values=params.get("acr_values", "").split(),
                         max_age=max_age)
    return None


def _claims(token: str) -> Dict[str, Any]:
    try:
        payload = token.split(".")[1]
        return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
    except (IndexError, ValueError):
        return {}


class TokenSource:
    """Finds the token to attach for scopes: held, fresh enough and never
    sent if single-use; else from a step-up. Shared by the urllib handler
    and the requests auth; one per process is enough."""

    _sent_once: Dict[str, float] = {}
    _lock = threading.Lock()

    def __init__(self, client: Optional[Client] = None, step_up: Optional[StepUp] = None, reason: str = "") -> None:
        self.client = client or Client()
        self._step_up = step_up
        self.reason = reason

    def token(self, scopes: List[str], challenge: Optional[Challenge] = None, refused: str = "") -> str:
        held = self.client.get_token(scopes[0])
        if held is not None and held.token != refused and self._usable(held.token, scopes, challenge):
            self._mark(held.token)
            return held.token
        if self._step_up is not None:
            res = self._step_up(scopes)
        else:
            res = self.client.prompt_step_up_auth(scopes, reason=self.reason)
        if not self._covers(_claims(res.token), scopes):
            raise StepUpError("the agent returned a token that does not carry the scopes")
        self._mark(res.token)
        return res.token

    @staticmethod
    def _covers(c: Dict[str, Any], scopes: List[str]) -> bool:
        have = str(c.get("scope", "")).split()
        return all(s in have for s in scopes)

    def _usable(self, token: str, scopes: List[str], ch: Optional[Challenge]) -> bool:
        c = _claims(token)
        if not self._covers(c, scopes):
            return False
        if ch is not None and ch.max_age is not None and time.time() - float(c.get("auth_time", 0)) > ch.max_age:
            return False
        if c.get("single_use"):
            with self._lock:
                return str(c.get("jti")) not in self._sent_once
        return True

    def _mark(self, token: str) -> None:
        c = _claims(token)
        if not c.get("single_use"):
            return
        now = time.time()
        with self._lock:
            for jti, exp in list(self._sent_once.items()):
                if exp < now:
                    del self._sent_once[jti]
            self._sent_once[str(c.get("jti"))] = float(c.get("exp", now + 600))


def _set_token(headers: Dict[str, str], header: str, token: str) -> None:
    if header.lower() == "authorization":
        headers["Authorization"] = "Bearer " + token
    else:
        headers[header] = token


class StepUpHandler(urllib.request.BaseHandler):
    """A urllib handler that answers a 401 step-up challenge once.

        opener = urllib.request.build_opener(StepUpHandler())
        opener.open(urllib.request.Request(url, data=b"{}", method="POST"))

    ``scope(request)`` may name the scope a request needs up front (the
    token is then attached to the first attempt).
    """

    handler_order = 400  # before the default HTTPErrorProcessor turns 401 into an exception

    def __init__(self, source: Optional[TokenSource] = None, header: str = DEFAULT_HEADER,
                 scope: Optional[Callable[[urllib.request.Request], str]] = None) -> None:
        self.source = source or TokenSource()
        self.header = header
        self.scope = scope

    def http_request(self, req: urllib.request.Request) -> urllib.request.Request:
        if self.scope is not None and not getattr(req, "_stepup_retry", False):
            s = self.scope(req)
            if s:
                tok = self.source.token([s])
                value = ("Bearer " + tok) if self.header.lower() == "authorization" else tok
                req.add_unredirected_header(self.header, value)
                req._stepup_sent = tok  # type: ignore[attr-defined]
        return req

    https_request = http_request

    def http_error_401(self, req: urllib.request.Request, fp: Any, code: int, msg: str, hdrs: Any) -> Any:
        if getattr(req, "_stepup_retry", False):
            return None  # answered once already: the 401 stands
        ch = parse_challenge(hdrs.get_all("WWW-Authenticate") or [])
        if ch is None or not ch.step_up_requested:
            return None
        scopes = ch.scopes
        if not scopes and self.scope is not None and self.scope(req):
            scopes = [self.scope(req)]
        if not scopes:
            return None
        tok = self.source.token(scopes, ch, refused=getattr(req, "_stepup_sent", ""))
        headers = {k: v for k, v in req.header_items() if k.lower() not in (self.header.lower(), "authorization")}
        _set_token(headers, self.header, tok)
        retry = urllib.request.Request(req.full_url, data=req.data, headers=headers, method=req.get_method())
        retry._stepup_retry = True  # type: ignore[attr-defined]
        fp.read()
        fp.close()
        return self.parent.open(retry, timeout=req.timeout if hasattr(req, "timeout") else None)


def urlopen(req: "urllib.request.Request | str", source: Optional[TokenSource] = None, header: str = DEFAULT_HEADER,
            timeout: Optional[float] = None) -> Any:
    """urllib.request.urlopen that answers a step-up challenge once."""
    opener = urllib.request.build_opener(StepUpHandler(source, header))
    return opener.open(req, timeout=timeout)


def requests_auth(source: Optional[TokenSource] = None, header: str = DEFAULT_HEADER) -> Any:
    """A requests auth object (``requests.get(url, auth=requests_auth())``)
    that answers a step-up challenge once. Needs the requests package."""
    import requests  # noqa: F401 - optional dependency

    src = source or TokenSource()

    def _auth(r: Any) -> Any:
        def on_response(resp: Any, **kwargs: Any) -> Any:
            if resp.status_code != 401 or getattr(resp.request, "_stepup_retry", False):
                return resp
            ch = parse_challenge([resp.headers.get("WWW-Authenticate", "")])
            if ch is None or not ch.step_up_requested or not ch.scopes:
                return resp
            tok = src.token(ch.scopes, ch)
            retry = resp.request.copy()
            if header.lower() == "authorization":
                retry.headers["Authorization"] = "Bearer " + tok
            else:
                retry.headers[header] = tok
            retry._stepup_retry = True
            resp.content  # noqa: B018 - release the connection
            resp.close()
            new = resp.connection.send(retry, **kwargs)
            new.history.append(resp)
            return new

        r.register_hook("response", on_response)
        return r

    return _auth
