"""Sign-in for the pages: the API key once in a form, then a session cookie.

The session token is ``<issued unix time>.<HMAC-SHA256(key, issued)>``: any worker holding the
key verifies it without shared state, it expires after :data:`SESSION_SECONDS`, and changing the
key signs everyone out. The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict``
(never sent by another site's request) and scoped to ``/ui``. State-changing requests (sign-in,
sign-out) are POSTs that must come from the same origin, and sign-out carries a CSRF token
derived from the session.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time

__all__ = [
    "COOKIE",
    "SESSION_SECONDS",
    "api_keys",
    "csrf_token",
    "issue_session",
    "key_matches",
    "same_origin",
    "session_valid",
]

COOKIE = "retentio_session"
SESSION_SECONDS = 12 * 3600
API_KEY_ENV = "RETENTIO_API_KEY"


def api_keys() -> list[str] | None:
    """The keys of ``RETENTIO_API_KEY`` (comma-separated); None when none is set (open pages).

    The service passes its own key set instead (environment, settings and key file).
    """
    keys = [k.strip() for k in os.environ.get(API_KEY_ENV, "").split(",") if k.strip()]
    return keys or None


def key_matches(given: str, keys: list[str]) -> str | None:
    """The configured key equal to ``given`` (constant-time compare), or None."""
    for key in keys:
        if hmac.compare_digest(given.encode(), key.encode()):
            return key
    return None


def _sign(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


def issue_session(key: str, now: float | None = None) -> str:
    """A new session token signed with ``key``."""
    issued = str(int(now if now is not None else time.time()))
    return f"{issued}.{_sign(key, 'session|' + issued)}"


def session_valid(token: str | None, keys: list[str], now: float | None = None) -> bool:
    """True when ``token`` was issued by one of ``keys`` less than a session ago."""
    if not token or "." not in token:
        return False
    issued, _, mac = token.partition(".")
    if not issued.isdigit():
        return False
    age = (now if now is not None else time.time()) - int(issued)
    if not 0 <= age < SESSION_SECONDS:
        return False
    return any(hmac.compare_digest(mac, _sign(k, "session|" + issued)) for k in keys)


def csrf_token(session: str, keys: list[str]) -> str:
    """The CSRF token of a session (forms that change state carry it)."""
    return _sign(keys[0], "csrf|" + session)[:32] if keys else ""


def same_origin(headers: dict[str, str], host: str) -> bool:
    """True unless the request names another origin (``Origin`` or ``Referer``)."""
    origin = headers.get("origin") or headers.get("referer")
    if not origin or origin == "null":
        return origin != "null"
    rest = origin.split("://", 1)[-1]
    return rest.split("/", 1)[0] == host
