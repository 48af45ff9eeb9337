"""Dashboard sessions: the cookie carries an expiry and an HMAC of it keyed by the admin token,
never the token; every replica and worker checks it alone, and a new token ends every session."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time


def _signature(admin_token: str, payload: str) -> str:
    key = hashlib.sha256(b"ladder-dashboard-session\0" + admin_token.encode()).digest()
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


def new_session(admin_token: str, lifetime_s: int, now: float | None = None) -> str:
    """A signed session value that expires lifetime_s from now."""
    expires = int((time.time() if now is None else now) + lifetime_s)
    payload = f"{expires}.{secrets.token_hex(8)}"
    return f"{payload}.{_signature(admin_token, payload)}"


def session_valid(value: str, admin_token: str, now: float | None = None) -> bool:
    """Whether a session value was signed with this admin token and has not expired."""
    payload, _, signature = value.rpartition(".")
    expires = payload.partition(".")[0]
    if not expires.isdigit() or not hmac.compare_digest(
        signature.encode(), _signature(admin_token, payload).encode()
    ):
        return False
    return int(expires) > (time.time() if now is None else now)
