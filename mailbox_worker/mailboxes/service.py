"""Connecting and disconnecting mailboxes: consent, least privilege, and "disconnect means gone".

Connect: a mailbox is created in ``pending_consent`` and its authorization-code flow (PKCE,
nonce, single-use ``state`` that expires) is sealed in the vault under the state's digest.
The callback consumes that state exactly once, redeems the code through the provider's
library, refuses a grant that lacks a needed scope, names no valid address, or belongs to
another address or another account than the one the mailbox is pinned to (``examine``),
stores the tokens encrypted, pins the mailbox to the account that signed in, and releases the
mailbox's held jobs. Every outcome is a stable code (``OUTCOMES``) sent back to the admin's
return URL; no failed attempt leaves a token behind.

A return URL is where the admin's browser goes after the consent: it must be on an origin
the account declared (``PUT /v1/account/return-origins``, ``mailbox-worker accounts
origins``) or on the daemon's own (that of ``redirect_uri``, where the admin page lives),
so the callback cannot be turned into an open redirect. Without a return URL the callback
answers its own page.

Disconnect erases the tokens with their data key (crypto-erasure), drops cached tokens,
cancels pending jobs and audits it. Microsoft offers no per-app grant revocation without
tenant-admin permissions (docs/providers.md A7): the refresh token we held is destroyed here, and
the admin should remove the app's consent in Entra (Enterprise applications → Permissions)
to revoke it at Microsoft as well.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from mailbox_worker.accounts import Principal
from mailbox_worker.clock import Clock, utcnow
from mailbox_worker.db.accounts import AccountStore
from mailbox_worker.db.mailboxes import MailboxStore, pinned_account
from mailbox_worker.db.models import Mailbox, OAuthState
from mailbox_worker.errors import (
    Conflict,
    DeliveryError,
    InvalidRequest,
    NotFound,
    TokenRecordChanged,
    TransientError,
)
from mailbox_worker.events.outbox import outbox_row
from mailbox_worker.jobs.store import JobStore
from mailbox_worker.mailboxes.revocations import Revocations
from mailbox_worker.policy.addresses import mailbox_address, same_address, spelled_by_idna_2003
from mailbox_worker.policy.consent import needs_admin_approval
from mailbox_worker.policy.identities import AccountId, may_connect
from mailbox_worker.policy.origins import normalise_origin, url_origin
from mailbox_worker.policy.scopes import broader_scopes, missing_scopes, required_scopes
from mailbox_worker.states import MailboxState
from mailbox_worker.tokens.access_tokens import AccessTokens
from mailbox_worker.tokens.identity_client import Grant, IdentityClient
from mailbox_worker.tokens.vault import AUTHORIZATION, TokenVault

log = logging.getLogger(__name__)

AUTHORIZATION_LIFETIME = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class SendingLimits:
    """A mailbox's own sending limits; None means its provider's default from the settings."""

    max_concurrency: int | None = None
    rate_per_minute: int | None = None
    daily_recipient_cap: int | None = None


@dataclass(frozen=True)
class MailboxView:
    """A mailbox as the API shows it: never a token, nor the account it is pinned to."""

    id: str
    provider: str
    capabilities: tuple[str, ...]
    state: MailboxState
    state_reason: str | None
    address: str | None
    granted_scopes: tuple[str, ...]
    created_at: dt.datetime
    updated_at: dt.datetime
    limits: SendingLimits = SendingLimits()
    paused_until: dt.datetime | None = None
    """No job of the mailbox is sent before then (a 429, or a rate or daily cap reached)."""

    @classmethod
    def of(cls, mailbox: Mailbox) -> MailboxView:
        return cls(
            id=mailbox.id,
            provider=mailbox.provider,
            capabilities=tuple(mailbox.capabilities),
            state=MailboxState(mailbox.state),
            state_reason=mailbox.state_reason,
            address=mailbox.address,
            granted_scopes=tuple(mailbox.granted_scopes),
            created_at=mailbox.created_at,
            updated_at=mailbox.updated_at,
            limits=SendingLimits(
                mailbox.max_concurrency, mailbox.rate_per_minute, mailbox.daily_recipient_cap
            ),
            paused_until=mailbox.paused_until,
        )


@dataclass(frozen=True)
class ConnectionStart:
    mailbox: MailboxView
    authorization_url: str


CONNECTED_OUTCOME = "connected"
"""The one ``CallbackResult.outcome`` that means the mailbox is connected."""

OUTCOMES: tuple[str, ...] = (
    CONNECTED_OUTCOME,
    "access_denied",
    "consent_failed",
    "admin_consent_required",
    "admin_consent_answered",
    "scope_missing",
    "scope_too_broad",
    "address_unknown",
    "address_invalid",
    "address_mismatch",
    "identity_unknown",
    "identity_mismatch",
    "state_invalid",
    "state_expired",
    "code_rejected",
    "provider_unavailable",
    "mailbox_disconnected",
)
"""Every ``CallbackResult.outcome``: ``connected``, else a stable code saying why not.

``access_denied``/``consent_failed``: the consent was refused or failed at the provider;
``admin_consent_required``: the organisation lets only an administrator approve the app
(Entra's "Need admin approval", docs/providers.md A8): ``admin_consent_url`` is the link to
hand that administrator; ``admin_consent_answered``: an administrator came back from that link
(no mailbox is named; each is connected again afterwards);
``scope_missing``: a permission the capabilities need was not granted; ``scope_too_broad``:
the grant also carries a scope that reads or manages the mailbox (docs/privacy.md LU-1), so it
was revoked rather than kept; ``address_unknown``:
the sign-in named no address; ``address_invalid``: it named something that is not a plain
mail address (an RFC 5322 addr-spec with a dot-atom local part); ``address_mismatch``: a
reconnect signed in as another address; ``identity_unknown``: the sign-in lacked the
provider's immutable account ids; ``identity_mismatch``: a reconnect signed in as another
account (another Entra ``tid``/``oid``, another Google ``sub``) than the one the mailbox is
pinned to, even with the same address; ``state_invalid``/``state_expired``: the authorization
link is unknown, used or too old; ``code_rejected``: the provider refused the code;
``provider_unavailable``: it could not be reached; ``mailbox_disconnected``: the mailbox was
disconnected meanwhile. No outcome but ``connected`` leaves a token of the attempt behind.
"""


@dataclass(frozen=True)
class CallbackResult:
    """Where to send the admin's browser after the OAuth callback, and what happened.

    ``outcome`` is one of ``OUTCOMES``. ``redirect_url`` is None when no return URL is known
    (unknown state): the API then renders a small page instead.
    """

    outcome: str
    message: str
    redirect_url: str | None
    mailbox_id: str | None
    admin_consent_url: str | None = None
    """With ``admin_consent_required``: the organisation's administrator's approval link (also
    added to ``redirect_url``'s query as ``admin_consent_url``)."""


@dataclass(frozen=True)
class Refusal:
    """Why a redeemed grant is not accepted: an outcome code and the admin's message."""

    outcome: str
    message: str


ADMIN_CONSENT_REQUIRED = (
    "Your organisation requires an administrator to approve this app before anyone in it can "
    "connect a mailbox. Send your administrator the approval link, then connect again once "
    "they have approved it."
)
CAPABILITY_NOT_OFFERED = (
    "this deployment does not offer {capabilities} for {provider} mailboxes: Gmail drafts need "
    "the restricted gmail.compose scope, which the operator has not enabled (google.drafts); "
    "create the mailbox with the send capability only"
)

IDENTITY_MISMATCH = Refusal(
    "identity_mismatch",
    "You signed in as another account than the one this mailbox was connected with (even if "
    "the address is the same): nothing was changed.",
)


def examine(mailbox: Mailbox, grant: Grant) -> tuple[str, AccountId] | Refusal:
    """The address (canonical form) and account a grant connects ``mailbox`` as, or why not.

    Refused: a grant missing a scope the capabilities need, or carrying one broader than
    sending needs (docs/privacy.md LU-1); one naming no address, or
    something that is not a plain mail address; a reconnect as another address (compared in
    canonical form); one without the provider's immutable account ids; a reconnect as another
    account than the pinned one. An unpinned mailbox (connected before pinning) accepts the
    account of a sign-in whose address matches, and is pinned to it (docs/identity.md).
    """
    required = required_scopes(mailbox.provider, mailbox.capabilities)
    missing = missing_scopes(required, grant.granted_scopes)
    if missing:
        return Refusal(
            "scope_missing",
            f"The consent did not grant {', '.join(missing)}, which this mailbox needs.",
        )
    broader = broader_scopes(grant.granted_scopes)
    if broader:
        return Refusal(
            "scope_too_broad",
            f"The grant also carries {', '.join(broader)}, more than sending needs; it was "
            "revoked. Remove this app's access in the account's security settings, then "
            "connect again.",
        )
    if not grant.address:
        return Refusal("address_unknown", "The sign-in gave no address.")
    address = mailbox_address(grant.address)
    if address is None:
        return Refusal(
            "address_invalid", "The sign-in gave an address that is not a valid mail address."
        )
    if (
        mailbox.address is not None
        and not same_address(mailbox.address, address)
        and not _spelled_before(mailbox, grant.address)
    ):
        return Refusal(
            "address_mismatch", "You signed in as another mailbox than the one being reconnected."
        )
    if grant.account is None:
        return Refusal("identity_unknown", "The sign-in did not say which account signed in.")
    if not may_connect(pinned_account(mailbox), grant.account):
        return IDENTITY_MISMATCH
    return address, grant.account


def _spelled_before(mailbox: Mailbox, reported: str) -> bool:
    """Whether ``mailbox`` holds ``reported`` as IDNA 2003 spelled it, for a mailbox pinned
    to its account: the account check that follows then decides, and the connect stores
    today's spelling (docs/identity.md, "Addresses spelled before IDNA 2008"). An unpinned
    mailbox has only its address to go by, and IDNA 2003's spelling of one domain is another
    domain's name: it is refused."""
    before = spelled_by_idna_2003(reported)
    return (
        mailbox.address is not None
        and before is not None
        and pinned_account(mailbox) is not None
        and same_address(mailbox.address, before)
    )


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
        clock: Clock = utcnow,
        *,
        wake_worker: Callable[[], None] = lambda: None,
    ) -> None:
        """``wake_worker``: this process's worker, woken when a reconnect releases held jobs
        (the release also notifies the other processes: ``JobStore.release_held``)."""
        self._mailboxes = mailboxes
        self._wake_worker = wake_worker
        self._jobs = jobs
        self._accounts = accounts
        self._vault = vault
        self._tokens = tokens
        self._identities = identities
        self._revocations = revocations
        self._redirect_uri = redirect_uri
        self._clock = clock
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
        self._check_offered(self._identity(provider), capabilities)
        await self._check_return_url(principal.account_id, return_url)
        mailbox = await self._mailboxes.create(
            principal.account_id, provider, capabilities, actor=f"api_key:{principal.key_id}"
        )
        url = await self._start(mailbox, return_url, login_hint)
        return ConnectionStart(mailbox=MailboxView.of(mailbox), authorization_url=url)

    async def reconnect(
        self, principal: Principal, mailbox_id: str, return_url: str | None
    ) -> ConnectionStart:
        mailbox = await self._owned(principal, mailbox_id)
        if mailbox.state == MailboxState.DISCONNECTED:
            raise Conflict(
                "a disconnected mailbox cannot be reconnected; create a new one",
                code="mailbox_disconnected",
            )
        self._check_offered(self._identity(mailbox.provider), mailbox.capabilities)
        await self._check_return_url(principal.account_id, return_url)
        url = await self._start(mailbox, return_url, mailbox.address)
        return ConnectionStart(mailbox=MailboxView.of(mailbox), authorization_url=url)

    @staticmethod
    def _check_offered(identity: IdentityClient, capabilities: list[str]) -> None:
        """``Conflict`` (``capability_not_offered``) when the operator turned off one of
        ``capabilities`` for the provider (``google.drafts = false``): nothing is asked."""
        unoffered = sorted(set(capabilities) - identity.capabilities)
        if unoffered:
            raise Conflict(
                CAPABILITY_NOT_OFFERED.format(
                    capabilities=", ".join(unoffered), provider=identity.provider
                ),
                code="capability_not_offered",
            )

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
        if "admin_consent" in query:
            return self._admin_consent_answer(query)
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
        if pending.expires_at < self._clock():
            return self._result("state_expired", "The authorization took too long.", pending)
        mailbox = await self._mailboxes.get(mailbox_id)
        if mailbox is None or mailbox.state == MailboxState.DISCONNECTED:
            return self._result("mailbox_disconnected", "The mailbox was disconnected.", pending)
        if "error" in query:
            if mailbox.provider == "microsoft" and needs_admin_approval(
                query.get("error_description")
            ):
                return await self._admin_consent_required(mailbox, pending)
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
        examined = examine(mailbox, grant)
        if isinstance(examined, Refusal):
            # Nothing of a refused grant is kept; Google's is revoked (Microsoft has no per-app
            # revocation: the fresh refresh token is simply never stored).
            await self._revocations.revoke(mailbox, grant.cache)
            await self._remember_failure(mailbox, examined.outcome)
            return self._result(examined.outcome, examined.message, pending)
        address, account = examined
        try:
            await self._vault.replace_tokens(mailbox.id, grant.cache.encode())
        except TokenRecordChanged as error:  # a concurrent consent stored its grant first
            raise Conflict(error.message, code=error.code) from None
        self._tokens.forget(mailbox.id)
        recorded = await self._mailboxes.mark_connected(
            mailbox.id,
            address,
            grant.granted_scopes,
            account=account,
            announce=outbox_row(
                mailbox.account_id,
                "mailbox.connected",
                {"mailbox_id": mailbox.id, "provider": mailbox.provider},
                self._clock(),
            ),
        )
        if not recorded:
            # Disconnected, or pinned to another account by a concurrent consent, while the
            # code was being redeemed: keep nothing of this grant. The vault already holds it
            # (written first, so a disconnect can never miss it), so its record goes; in the
            # concurrent case the mailbox then asks for consent again at its next token.
            await self._vault.erase(mailbox.id)
            self._tokens.forget(mailbox.id)
            await self._revocations.revoke(mailbox, grant.cache)
            current = await self._mailboxes.get(mailbox.id)
            if current is None or current.state == MailboxState.DISCONNECTED:
                return self._result(
                    "mailbox_disconnected", "The mailbox was disconnected.", pending
                )
            await self._remember_failure(mailbox, IDENTITY_MISMATCH.outcome)
            return self._result(IDENTITY_MISMATCH.outcome, IDENTITY_MISMATCH.message, pending)
        released = await self._jobs.release_held(mailbox.id)
        if released:
            self._wake_worker()
        await self._accounts.audit(
            "admin",
            mailbox.account_id,
            "mailbox.connected",
            mailbox.id,
            {"scopes": sorted(grant.granted_scopes), "released_jobs": released},
        )
        return self._result(CONNECTED_OUTCOME, "The mailbox is connected.", pending)

    async def _admin_consent_required(
        self, mailbox: Mailbox, pending: OAuthState
    ) -> CallbackResult:
        """The tenant lets only an administrator consent: say so, with the approval link for
        exactly the scopes this mailbox asked (docs/providers.md A8)."""
        scopes = list(required_scopes(mailbox.provider, mailbox.capabilities))
        link = self._identity(mailbox.provider).admin_consent_url(scopes, self._redirect_uri)
        await self._remember_failure(mailbox, "admin_consent_required")
        return self._result(
            "admin_consent_required", ADMIN_CONSENT_REQUIRED, pending, admin_consent_url=link
        )

    @staticmethod
    def _admin_consent_answer(query: Mapping[str, str]) -> CallbackResult:
        """An administrator back from the admin-consent link. Its parameters (``tenant`` among
        them) are not trusted (docs/providers.md A8) and change nothing: the page only says
        what to do next."""
        if "error" in query:
            message = (
                "The approval was not given. Your administrator can open the approval link "
                "again, or approve the app in the Microsoft Entra admin center."
            )
        else:
            message = (
                "If you approved the app for your organisation, its users can now connect "
                "their mailboxes: start the connection again."
            )
        return CallbackResult("admin_consent_answered", message, None, None)

    async def _remember_failure(self, mailbox: Mailbox, code: str) -> None:
        await self._mailboxes.set_state(
            mailbox.id,
            mailbox.state,
            code,
            expected=[MailboxState.PENDING_CONSENT, MailboxState.REAUTH_REQUIRED],
        )
        await self._accounts.audit(
            "admin", mailbox.account_id, "mailbox.consent_failed", mailbox.id, {"code": code}
        )

    @staticmethod
    def _result(
        outcome: str, message: str, pending: OAuthState, admin_consent_url: str | None = None
    ) -> CallbackResult:
        mailbox_id, return_url = pending.mailbox_id, pending.return_url
        redirect = None
        if return_url:
            parts = urlsplit(str(return_url))
            added = {"mailbox_id": mailbox_id, "outcome": outcome}
            if admin_consent_url:
                added["admin_consent_url"] = admin_consent_url
            extra = urlencode(added)
            query = f"{parts.query}&{extra}" if parts.query else extra
            redirect = urlunsplit(parts._replace(query=query))
        return CallbackResult(outcome, message, redirect, mailbox_id, admin_consent_url)

    # -- read --------------------------------------------------------------------------------

    async def get(self, principal: Principal, mailbox_id: str) -> MailboxView:
        """The caller's mailbox; ``NotFound`` for another account's or an unknown one."""
        return MailboxView.of(await self._owned(principal, mailbox_id))

    async def list(
        self,
        principal: Principal,
        *,
        limit: int | None = None,
        after: tuple[dt.datetime, str] | None = None,
        include_disconnected: bool = True,
    ) -> list[MailboxView]:
        """The caller's mailboxes, oldest first: at most ``limit`` (None: all), after the
        ``(created_at, id)`` of the previous page's last one."""
        mailboxes = await self._mailboxes.list(
            principal.account_id,
            limit=limit,
            after=after,
            include_disconnected=include_disconnected,
        )
        return [MailboxView.of(mailbox) for mailbox in mailboxes]

    async def held_job_counts(self, principal: Principal) -> Mapping[str, int]:
        """How many jobs wait ``held`` for each of the caller's mailboxes (absent: none)."""
        return await self._jobs.held_counts(principal.account_id)

    async def _owned(self, principal: Principal, mailbox_id: str) -> Mailbox:
        mailbox = await self._mailboxes.get(mailbox_id, principal.account_id)
        if mailbox is None:
            raise NotFound("no such mailbox in this account", code="mailbox_not_found")
        return mailbox

    # -- limits ----------------------------------------------------------------------------------

    async def set_limits(
        self, principal: Principal, mailbox_id: str, limits: Mapping[str, int | None]
    ) -> MailboxView:
        """Change some of the caller's mailbox's sending limits (None: back to the provider's
        default); audited. ``Conflict`` (mailbox_disconnected) once it is disconnected."""
        mailbox = await self._owned(principal, mailbox_id)
        if mailbox.state == MailboxState.DISCONNECTED:
            raise Conflict("the mailbox was disconnected", code="mailbox_disconnected")
        if not await self._mailboxes.set_limits(
            mailbox_id, limits, actor=f"api_key:{principal.key_id}"
        ):
            raise NotFound("no such mailbox in this account", code="mailbox_not_found")
        return await self.get(principal, mailbox_id)

    # -- disconnect ----------------------------------------------------------------------------

    async def disconnect(self, principal: Principal, mailbox_id: str) -> MailboxView:
        """Disconnect the caller's mailbox (``disconnect_mailbox``); idempotent."""
        mailbox = await self._owned(principal, mailbox_id)
        await self.disconnect_mailbox(mailbox, actor=f"api_key:{principal.key_id}")
        return await self.get(principal, mailbox_id)

    async def disconnect_mailbox(self, mailbox: Mailbox, actor: str) -> None:
        """Revoke at the provider where it can be, erase tokens and data key, cancel pending
        jobs, mark disconnected, audit. Idempotent; succeeds while the provider is down (the
        revocation is then retried in the background). The vault's erase scrubs the freed
        storage (docs/erasure.md); a token left to revoke waits sealed under a key of its own,
        and is scrubbed in turn once revoked."""
        stored = (
            await self._vault.load_tokens(mailbox.id)
            if mailbox.state != MailboxState.DISCONNECTED
            else None
        )
        await self._vault.erase(mailbox.id)
        self._tokens.forget(mailbox.id)
        cancelled = await self._jobs.cancel_pending_for_mailbox(
            mailbox.id, "mailbox_disconnected", "the mailbox was disconnected before the job ran"
        )
        moved = await self._mailboxes.set_state(
            mailbox.id,
            MailboxState.DISCONNECTED,
            "disconnected_by_admin",
            expected=[
                MailboxState.PENDING_CONSENT,
                MailboxState.CONNECTED,
                MailboxState.REAUTH_REQUIRED,
            ],
            announce=outbox_row(
                mailbox.account_id,
                "mailbox.disconnected",
                {
                    "mailbox_id": mailbox.id,
                    "provider": mailbox.provider,
                    "cancelled_jobs": cancelled,
                },
                self._clock(),
            ),
        )
        if not moved:
            return
        # A job enqueued between the sweep above and the state change would otherwise wait
        # on a disconnected mailbox; the intake's own check covers the ones enqueued after.
        await self._jobs.cancel_pending_for_mailbox(
            mailbox.id, "mailbox_disconnected", "the mailbox was disconnected before the job ran"
        )
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
