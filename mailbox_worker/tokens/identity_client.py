"""The port every identity provider client implements, and what it hands back.

An identity client runs one provider's OAuth protocol through that provider's own library
(msal for Microsoft, google-auth for Google). It is synchronous (those libraries are):
callers run it in a worker thread. The "token blob" it produces and consumes is opaque to
everyone else; the vault stores it encrypted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from mailbox_worker.policy.identities import AccountId

# How long jobs wait when the identity platform refuses our app itself (an operator must act).
MISCONFIGURED_RETRY_AFTER = 300.0


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_at: float  # epoch seconds

    def __repr__(self) -> str:
        return f"AccessToken(expires_at={self.expires_at!r})"


@dataclass(frozen=True)
class Grant:
    """A redeemed authorization: the token blob to store and what the provider told us.

    ``address`` is the mailbox address the id_token names, as the provider wrote it ("" when
    it named none; validated by the caller). ``account`` is who signed in by the provider's
    immutable ids, or None when the id_token lacked them (the caller refuses such a grant).
    """

    cache: str
    address: str
    granted_scopes: tuple[str, ...]
    account: AccountId | None

    def __repr__(self) -> str:
        return f"Grant(address={self.address!r}, granted_scopes={self.granted_scopes!r})"


@dataclass(frozen=True)
class Refreshed:
    access_token: AccessToken
    cache: str | None  # the new blob when it changed (refresh, rotation), else None
    from_identity_provider: bool


class IdentityClient(Protocol):
    """One OAuth app registration at one provider."""

    provider: str
    capabilities: frozenset[str]
    """The mailbox capabilities this registration offers (``policy.scopes.CAPABILITIES``, or
    fewer when the operator turned one off: Gmail drafts, docs/providers.md D6)."""

    def start(self, scopes: list[str], redirect_uri: str, login_hint: str | None) -> dict[str, Any]:
        """A new authorization-code flow with PKCE; the dict holds ``state`` and ``auth_uri``
        and everything needed to redeem (it is sealed in the vault meanwhile)."""
        ...

    def redeem(self, flow: dict[str, Any], response: dict[str, str]) -> Grant:
        """Exchange the redirect's code; ``PermanentError``/``TransientError`` on failure."""
        ...

    def admin_consent_url(self, scopes: list[str], redirect_uri: str) -> str | None:
        """The link an organisation's administrator follows to approve the app for everyone
        in it (docs/providers.md A8), or None where the provider has no such thing."""
        ...

    def refresh(self, cache_blob: str, scopes: list[str], *, force: bool) -> Refreshed:
        """A valid access token, refreshing when needed; ``ReauthRequired`` if the grant died."""
        ...

    def revoke(self, cache_blob: str) -> bool:
        """Revoke the grant at the provider. False when the provider offers no revocation.

        Raises ``TransientError`` when the provider could not be reached (retry later).
        """
        ...

    def revoke_token(self, token: str) -> None:
        """Revoke one token (the background retry uses this)."""
        ...

    def revocable_token(self, cache_blob: str) -> str | None:
        """The token whose revocation kills the grant, or None if the provider has none."""
        ...

    def close(self) -> None: ...
