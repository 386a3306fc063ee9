"""Connecting and disconnecting mailboxes: consent, least privilege, and "disconnect means gone".

Connect: a mailbox is created in ``pending_consent`` and its authorization-code flow (PKCE,
nonce, single-use ``state`` that expires) is sealed in the vault under the state's digest.
The callback consumes that state exactly once, redeems the code through msal, refuses a
grant that lacks a needed scope or belongs to another address, stores the tokens encrypted,
and releases the mailbox's held jobs. Every outcome is a stable code sent back to the
admin's return URL; no failed attempt leaves a token behind.

A return URL is where the admin's browser goes after the consent: it must be on an origin
the account declared (``PUT /v1/account/return-origins``, ``mailbox-worker accounts
origins``) or on the daemon's own (that of ``redirect_uri``, where the admin page lives),
so the callback cannot be turned into an open redirect. Without a return URL the callback
answers its own page.

Disconnect erases the tokens with their data key (crypto-erasure), drops cached tokens,
cancels pending jobs and audits it. Microsoft offers no per-app grant revocation without
tenant-admin permissions (providers.md A7): the refresh token we held is destroyed here, and
the admin should remove the app's consent in Entra (Enterprise applications → Permissions)
to revoke it at Microsoft as well.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from mailbox_worker.db.accounts import AccountStore, Principal, utcnow
from mailbox_worker.db.mailboxes import (
    CONNECTED,
    DISCONNECTED,
    PENDING_CONSENT,
    REAUTH_REQUIRED,
    MailboxStore,
)
from mailbox_worker.db.models import Mailbox, OAuthState
from mailbox_worker.db.outbox import outbox_row
from mailbox_worker.errors import (
    Conflict,
    DeliveryError,
    InvalidRequest,
    NotFound,
    TransientError,
)
from mailbox_worker.jobs.queue import JobStore
from mailbox_worker.mailboxes.revocations import Revocations
from mailbox_worker.policy.origins import normalise_origin, url_origin
from mailbox_worker.policy.scopes import missing_scopes, required_scopes
from mailbox_worker.tokens.identity import IdentityClient
from mailbox_worker.tokens.service import AccessTokens
from mailbox_worker.tokens.vault import AUTHORIZATION, TokenVault

log = logging.getLogger(__name__)

AUTHORIZATION_LIFETIME = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class ConnectionStart:
    mailbox: Mailbox
    authorization_url: str


@dataclass(frozen=True)
class CallbackResult:
    """Where to send the admin's browser after the OAuth callback, and what happened.

    ``outcome`` is ``connected`` or a stable error code (``access_denied``,
    ``scope_missing``, ``state_invalid``, ``state_expired``, ``address_mismatch``,
    ``code_rejected``, ``provider_unavailable``). ``redirect_url`` is None when no
    return URL is known (unknown state): the API then renders a small page instead.
    """

    outcome: str
    message: str
    redirect_url: str | None
    mailbox_id: str | None


class MailboxService:
    def __init__(
        self,
        mailboxes: MailboxStore,
        jobs: JobStore,
        accounts: AccountStore,
        vault: TokenVault,
        tokens: AccessTokens,
        identities: Mapping[str, IdentityClient],
        revocations: Revocations,
        redirect_uri: str,
    ) -> None:
        self._mailboxes = mailboxes
        self._jobs = jobs
        self._accounts = accounts
        self._vault = vault
        self._tokens = tokens
        self._identities = identities
        self._revocations = revocations
        self._redirect_uri = redirect_uri
        self._own_origin = url_origin(redirect_uri, http_anywhere=True)

    # -- connect -----------------------------------------------------------------------------

    async def create(
        self,
        principal: Principal,
        provider: str,
        capabilities: list[str],
        return_url: str | None,
        login_hint: str | None,
    ) -> ConnectionStart:
        try:
            required_scopes(provider, capabilities)
        except ValueError as error:
            raise InvalidRequest(str(error), code="invalid_capabilities") from None
        self._identity(provider)
        await self._check_return_url(principal.account_id, return_url)
        mailbox = await self._mailboxes.create(
            principal.account_id, provider, capabilities, actor=f"api_key:{principal.key_id}"
        )
        url = await self._start(mailbox, return_url, login_hint)
        return ConnectionStart(mailbox=mailbox, authorization_url=url)

    async def reconnect(
        self, principal: Principal, mailbox_id: str, return_url: str | None
    ) -> ConnectionStart:
        mailbox = await self.get(principal, mailbox_id)
        if mailbox.state == DISCONNECTED:
            raise Conflict(
                "a disconnected mailbox cannot be reconnected; create a new one",
                code="mailbox_disconnected",
            )
        await self._check_return_url(principal.account_id, return_url)
        url = await self._start(mailbox, return_url, mailbox.address)
        return ConnectionStart(mailbox=mailbox, authorization_url=url)

    async def _check_return_url(self, account_id: str, return_url: str | None) -> None:
        """``Conflict`` (``return_url_not_allowed``) unless ``return_url`` is None or on the
        daemon's own origin or one the account declared; the message names the origin and
        how to declare it."""
        if return_url is None:
            return
        try:
            origin = url_origin(return_url, http_anywhere=True)
        except ValueError as error:
            raise Conflict(f"the return_url {error}", code="return_url_not_allowed") from None
        if origin == self._own_origin or origin in await self._accounts.return_origins(account_id):
            return
        try:  # an origin no account could declare (http on a public host): say why
            normalise_origin(origin)
        except ValueError as error:
            raise Conflict(
                f"the return_url's origin {origin} {error}", code="return_url_not_allowed"
            ) from None
        raise Conflict(
            f"the return_url's origin {origin} is not one this account declared; an API key "
            f"with account:write can add it with PUT /v1/account/return-origins, or the "
            f"operator with 'mailbox-worker accounts origins --account {account_id} "
            f"--add {origin}'",
            code="return_url_not_allowed",
        )

    async def _start(self, mailbox: Mailbox, return_url: str | None, login_hint: str | None) -> str:
        identity = self._identity(mailbox.provider)
        scopes = list(required_scopes(mailbox.provider, mailbox.capabilities))
        try:
            flow = await asyncio.to_thread(identity.start, scopes, self._redirect_uri, login_hint)
        except TransientError as error:
            raise Conflict(error.message, code="provider_unavailable") from None
        sealed = await self._vault.seal(mailbox.id, AUTHORIZATION, json.dumps(flow).encode())
        await self._mailboxes.save_authorization(
            str(flow["state"]),
            mailbox.account_id,
            mailbox.id,
            sealed,
            return_url,
            AUTHORIZATION_LIFETIME,
        )
        return str(flow["auth_uri"])

    def _identity(self, provider: str) -> IdentityClient:
        identity = self._identities.get(provider)
        if identity is None:
            raise Conflict(
                f"no OAuth app is configured for {provider}", code="provider_not_configured"
            )
        return identity

    async def complete(self, query: Mapping[str, str]) -> CallbackResult:
        state = query.get("state")
        pending = await self._mailboxes.consume_authorization(state) if state else None
        if pending is None:
            return CallbackResult(
                "state_invalid",
                "This authorization link is unknown or was already used. Start again.",
                None,
                None,
            )
        mailbox_id = pending.mailbox_id
        if pending.expires_at < utcnow():
            return self._result("state_expired", "The authorization took too long.", pending)
        mailbox = await self._mailboxes.get(mailbox_id)
        if mailbox is None or mailbox.state == DISCONNECTED:
            return self._result("mailbox_disconnected", "The mailbox was disconnected.", pending)
        if "error" in query:
            code = "access_denied" if query["error"] == "access_denied" else "consent_failed"
            await self._remember_failure(mailbox, code)
            return self._result(code, "The consent was not given.", pending)
        flow = json.loads(await self._vault.open(mailbox_id, AUTHORIZATION, pending.sealed_flow))
        identity = self._identity(mailbox.provider)
        try:
            grant = await asyncio.to_thread(identity.redeem, flow, dict(query))
        except DeliveryError as error:
            code = "provider_unavailable" if isinstance(error, TransientError) else error.code
            await self._remember_failure(mailbox, code)
            return self._result(code, error.message, pending)
        required = required_scopes(mailbox.provider, mailbox.capabilities)
        missing = missing_scopes(required, grant.granted_scopes)
        if missing:
            # Google's granular consent: revoke the partial grant rather than keep it.
            await self._revocations.revoke(mailbox, grant.cache)
            await self._remember_failure(mailbox, "scope_missing")
            return self._result(
                "scope_missing",
                f"The consent did not grant {', '.join(missing)}, which this mailbox needs.",
                pending,
            )
        if not grant.address:
            await self._revocations.revoke(mailbox, grant.cache)
            await self._remember_failure(mailbox, "address_unknown")
            return self._result("address_unknown", "The sign-in gave no address.", pending)
        if mailbox.address is not None and mailbox.address.lower() != grant.address.lower():
            await self._revocations.revoke(mailbox, grant.cache)
            await self._remember_failure(mailbox, "address_mismatch")
            return self._result(
                "address_mismatch",
                "You signed in as another mailbox than the one being reconnected.",
                pending,
            )
        await self._vault.replace_tokens(mailbox.id, grant.cache.encode())
        self._tokens.forget(mailbox.id)
        recorded = await self._mailboxes.mark_connected(
            mailbox.id,
            grant.address,
            grant.granted_scopes,
            announce=outbox_row(
                mailbox.account_id,
                "mailbox.connected",
                {"mailbox_id": mailbox.id, "provider": mailbox.provider},
            ),
        )
        if not recorded:  # disconnected while the code was being redeemed: keep nothing
            await self._vault.erase(mailbox.id)
            self._tokens.forget(mailbox.id)
            await self._revocations.revoke(mailbox, grant.cache)
            return self._result("mailbox_disconnected", "The mailbox was disconnected.", pending)
        released = await self._jobs.release_held(mailbox.id)
        await self._accounts.audit(
            "admin",
            mailbox.account_id,
            "mailbox.connected",
            mailbox.id,
            {"scopes": sorted(grant.granted_scopes), "released_jobs": released},
        )
        return self._result("connected", "The mailbox is connected.", pending)

    async def _remember_failure(self, mailbox: Mailbox, code: str) -> None:
        await self._mailboxes.set_state(
            mailbox.id, mailbox.state, code, expected=[PENDING_CONSENT, REAUTH_REQUIRED]
        )
        await self._accounts.audit(
            "admin", mailbox.account_id, "mailbox.consent_failed", mailbox.id, {"code": code}
        )

    @staticmethod
    def _result(outcome: str, message: str, pending: OAuthState) -> CallbackResult:
        mailbox_id, return_url = pending.mailbox_id, pending.return_url
        redirect = None
        if return_url:
            parts = urlsplit(str(return_url))
            extra = urlencode({"mailbox_id": mailbox_id, "outcome": outcome})
            query = f"{parts.query}&{extra}" if parts.query else extra
            redirect = urlunsplit(parts._replace(query=query))
        return CallbackResult(outcome, message, redirect, mailbox_id)

    # -- read --------------------------------------------------------------------------------

    async def get(self, principal: Principal, mailbox_id: str) -> Mailbox:
        mailbox = await self._mailboxes.get(mailbox_id, principal.account_id)
        if mailbox is None:
            raise NotFound("no such mailbox in this account", code="mailbox_not_found")
        return mailbox

    async def list(self, principal: Principal) -> list[Mailbox]:
        return await self._mailboxes.list(principal.account_id)

    # -- disconnect ----------------------------------------------------------------------------

    async def disconnect(self, principal: Principal, mailbox_id: str) -> Mailbox:
        mailbox = await self.get(principal, mailbox_id)
        await self.disconnect_mailbox(mailbox, actor=f"api_key:{principal.key_id}")
        return await self.get(principal, mailbox_id)

    async def disconnect_mailbox(self, mailbox: Mailbox, actor: str) -> None:
        """Revoke at the provider where it can be, erase tokens and data key, cancel pending
        jobs, mark disconnected, audit. Idempotent; succeeds while the provider is down (the
        revocation is then retried in the background)."""
        stored = (
            await self._vault.load_tokens(mailbox.id) if mailbox.state != DISCONNECTED else None
        )
        await self._vault.erase(mailbox.id)
        self._tokens.forget(mailbox.id)
        cancelled = await self._jobs.cancel_pending_for_mailbox(
            mailbox.id, "mailbox_disconnected", "the mailbox was disconnected before the job ran"
        )
        moved = await self._mailboxes.set_state(
            mailbox.id,
            DISCONNECTED,
            "disconnected_by_admin",
            expected=[PENDING_CONSENT, CONNECTED, REAUTH_REQUIRED],
            announce=outbox_row(
                mailbox.account_id,
                "mailbox.disconnected",
                {
                    "mailbox_id": mailbox.id,
                    "provider": mailbox.provider,
                    "cancelled_jobs": cancelled,
                },
            ),
        )
        if not moved:
            return
        # A consent completing concurrently may have stored a grant after the erase above.
        latest = await self._vault.load_tokens(mailbox.id)
        await self._vault.erase(mailbox.id)
        self._tokens.forget(mailbox.id)
        revocation = await self._revocations.revoke(
            mailbox, stored.plaintext.decode() if stored else None
        )
        if latest is not None and (stored is None or latest.plaintext != stored.plaintext):
            await self._revocations.revoke(mailbox, latest.plaintext.decode())
        await self._accounts.audit(
            actor,
            mailbox.account_id,
            "mailbox.disconnected",
            mailbox.id,
            {"cancelled_jobs": cancelled, "provider_revocation": revocation},
        )
