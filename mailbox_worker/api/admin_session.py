"""Admin page sessions: a signed cookie naming an API key, and CSRF tokens derived from it.

The cookie's value is ``<key id>.<expiry (Unix seconds)>.<HMAC-SHA256>`` where the HMAC,
keyed with a random secret drawn when the process starts, covers the key id and the expiry.
It never contains the API key. Because the secret lives only in memory, every session ends
when the daemon restarts (and a session opened on one process is unknown to another).

The API key is checked once, at sign-in, and never kept. The process remembers only which
key ids signed in (until their sessions expire); every request looks the key up again by id
(``KeyLookup.principal``): a key revoked or deleted after sign-in ends its sessions at
once. Signing out forgets the key id, which ends every session opened with it.

A form's CSRF token is an HMAC of the cookie's value under the same secret (with a
distinct label), so it is bound to one session and useless without its cookie.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mailbox_worker.accounts import Principal

COOKIE_NAME = "mailbox_worker_admin"
COOKIE_PATH = "/admin"
LIFETIME = dt.timedelta(hours=8)
_SESSION_LABEL = b"session\x00"
_CSRF_LABEL = b"csrf\x00"


class KeyLookup(Protocol):
    """Where sessions check API keys (``accounts.AccountService``)."""

    async def authenticate(self, presented: str) -> Principal | None:
        """The principal of a presented key; None for an unknown, malformed or revoked key."""
        ...

    async def principal(self, key_id: str) -> Principal | None:
        """The principal of an existing, unrevoked key, by its id."""
        ...


@dataclass(frozen=True)
class Session:
    """A signed-in admin: who they are, and the cookie value that proves it."""

    principal: Principal
    cookie: str
    expires_at: int


@dataclass
class AdminSessions:
    """Issues, checks and ends sessions; one instance per running application."""

    accounts: KeyLookup
    clock: Callable[[], float] = time.time
    _secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    # key id -> latest expiry of a session opened with it. Memory only; no secret.
    _keys: dict[str, int] = field(default_factory=dict, repr=False)

    async def sign_in(self, api_key: str) -> Session | None:
        """A new session for ``api_key``, or None when the key is unknown or revoked."""
        principal = await self.accounts.authenticate(api_key)
        if principal is None:
            return None
        self._forget_expired()
        expires_at = int(self.clock() + LIFETIME.total_seconds())
        self._keys[principal.key_id] = expires_at
        payload = f"{principal.key_id}.{expires_at}"
        return Session(principal, f"{payload}.{self._sign(_SESSION_LABEL, payload)}", expires_at)

    async def resume(self, cookie: str | None) -> Session | None:
        """The session a cookie proves, re-checking its key; None when it proves none."""
        if not cookie:
            return None
        key_id, _, rest = cookie.partition(".")
        expiry, _, signature = rest.partition(".")
        payload = f"{key_id}.{expiry}"
        if not key_id or not expiry.isdigit() or len(expiry) > 12:
            return None
        if not hmac.compare_digest(
            signature.encode(), self._sign(_SESSION_LABEL, payload).encode()
        ):
            return None
        expires_at = int(expiry)
        if expires_at <= self.clock():
            return None
        if key_id not in self._keys:
            return None
        principal = await self.accounts.principal(key_id)
        if principal is None:
            self._keys.pop(key_id, None)  # revoked since sign-in: forget the key now
            return None
        return Session(principal, cookie, expires_at)

    def sign_out(self, session: Session) -> None:
        """Forget the session's key: every session opened with it ends."""
        self._keys.pop(session.principal.key_id, None)

    def csrf_token(self, session: Session) -> str:
        """The token every form of this session carries."""
        return self._sign(_CSRF_LABEL, session.cookie)

    def csrf_valid(self, session: Session, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self.csrf_token(session).encode())

    def _sign(self, label: bytes, payload: str) -> str:
        return hmac.new(self._secret, label + payload.encode(), hashlib.sha256).hexdigest()

    def _forget_expired(self) -> None:
        now = self.clock()
        for key_id in [k for k, expiry in self._keys.items() if expiry <= now]:
            del self._keys[key_id]
