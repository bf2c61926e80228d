"""Dashboard sessions: the admin token kept in an HTTP-only cookie, and its CSRF token.

Plain Python, no I/O, no server-side state: the cookie carries the token itself (so revoking a
token ends its sessions at once) and the time the session expires. Any replica that knows the
token table can check a session, and can check its CSRF token too, since that is an HMAC of the
session keyed by the token: a page served by one worker may call another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

from gateway.security import Principal, TokenTable

SESSION_COOKIE = "gateway_session"
CSRF_HEADER = "x-csrf-token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_FORMAT = "v1"
_CSRF_PURPOSE = b"release-gateway dashboard csrf v1|"


@dataclass(frozen=True, slots=True)
class Session:
    """A valid session: who holds it, until when, and the CSRF token its pages must send."""

    principal: Principal
    expires_at: int
    csrf_token: str


def session_cookie_value(token: str, expires_at: int) -> str:
    """The cookie that holds `token` until `expires_at` (epoch seconds)."""
    encoded = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
    return f"{_FORMAT}.{expires_at}.{encoded}"


def open_session(value: str, table: TokenTable, now: float) -> Session | None:
    """The session a cookie stands for, or None when it is malformed, expired or its token is
    not (or no longer) a configured one. The token is compared in constant time."""
    parts = value.split(".")
    if len(parts) != 3 or parts[0] != _FORMAT or not parts[1].isdigit():
        return None
    expires_at = int(parts[1])
    if expires_at <= now:
        return None
    token = _decode_token(parts[2])
    if token is None:
        return None
    principal = table.authenticate(token)
    if principal is None:
        return None
    return Session(principal, expires_at, csrf_token(token, expires_at))


def csrf_token(token: str, expires_at: int) -> str:
    """The CSRF token of one session: unguessable without the admin token, and new at each
    login (it covers the expiry)."""
    message = _CSRF_PURPOSE + str(expires_at).encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def csrf_matches(session: Session, presented: str | None) -> bool:
    """Whether a request's CSRF header is the session's, compared in constant time."""
    if not presented:
        return False
    return hmac.compare_digest(session.csrf_token.encode(), presented.strip().encode())


def _decode_token(encoded: str) -> str | None:
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        return raw.decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
