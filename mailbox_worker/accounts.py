"""Who calls the API and the account they act for: the views the API renders, and the
service that answers them over ``db.accounts``.

The API never sees a database row: it authenticates a presented key into a ``Principal``,
reads an ``AccountView``, replaces the account's return origins, and grants or revokes
support access (``SupportGrantView``, docs/privacy.md PP-3), all through
``AccountService``. Accounts and keys are created by the operator (the CLI), not here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from mailbox_worker.db.accounts import AccountStore
from mailbox_worker.db.models import ApiKey, SupportGrant
from mailbox_worker.db.support_grants import SupportGrantStore
from mailbox_worker.errors import InvalidRequest, NotFound


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of the API: an API key of an account, with its permissions."""

    account_id: str
    key_id: str
    permissions: frozenset[str]


@dataclass(frozen=True)
class AccountView:
    """An account as the API shows it, with its declared return origins (sorted)."""

    id: str
    name: str
    created_at: dt.datetime
    return_origins: tuple[str, ...]


@dataclass(frozen=True)
class SupportGrantView:
    """A support-access grant as the API shows it."""

    id: str
    granted_by: str
    reason: str
    created_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None


class AccountService:
    """Authenticates API keys and reads or changes the caller's own account."""

    def __init__(self, accounts: AccountStore, support_grants: SupportGrantStore) -> None:
        self._accounts = accounts
        self._support_grants = support_grants

    async def authenticate(self, presented: str) -> Principal | None:
        """The principal of a presented key; None for an unknown, malformed or revoked key."""
        return _principal(await self._accounts.authenticate(presented))

    async def principal(self, key_id: str) -> Principal | None:
        """The principal of an existing, unrevoked key, by its id (admin page sessions)."""
        return _principal(await self._accounts.active_key(key_id))

    async def account(self, principal: Principal) -> AccountView:
        """The caller's account; ``NotFound`` (account_not_found) once it is deleted."""
        account = await self._accounts.get_account(principal.account_id)
        if account is None:  # deleted since the key was checked
            raise NotFound("no such account", code="account_not_found")
        origins = await self._accounts.return_origins(account.id)
        return AccountView(account.id, account.name, account.created_at, tuple(sorted(origins)))

    async def set_return_origins(self, principal: Principal, origins: list[str]) -> AccountView:
        """Replace the caller's return origins (normalised, audited as the key); the account
        as it then is. ``InvalidRequest`` (invalid_origin) names an origin that is not one."""
        try:
            await self._accounts.set_return_origins(
                principal.account_id, origins, f"api_key:{principal.key_id}"
            )
        except ValueError as error:  # the document's "origin" format already refuses these
            raise InvalidRequest(str(error), code="invalid_origin") from None
        return await self.account(principal)

    async def grant_support(
        self, principal: Principal, hours: int, reason: str
    ) -> SupportGrantView:
        """Grant support access for ``hours``, replacing an active grant; audited as the key.
        ``InvalidRequest`` (invalid_support_grant) for hours or a reason out of range;
        ``NotFound`` (account_not_found) once the account is deleted."""
        try:
            grant = await self._support_grants.grant(
                principal.account_id, principal.key_id, hours, reason
            )
        except ValueError as error:
            raise InvalidRequest(str(error), code="invalid_support_grant") from None
        except LookupError:
            raise NotFound("no such account", code="account_not_found") from None
        return _grant_view(grant)

    async def revoke_support(self, principal: Principal) -> SupportGrantView | None:
        """End the active grant now, audited; None when there was none."""
        grant = await self._support_grants.revoke(principal.account_id, principal.key_id)
        return None if grant is None else _grant_view(grant)

    async def support_grant(self, principal: Principal) -> SupportGrantView | None:
        """The account's active grant, or None."""
        grant = await self._support_grants.active(principal.account_id)
        return None if grant is None else _grant_view(grant)


def _grant_view(grant: SupportGrant) -> SupportGrantView:
    return SupportGrantView(
        grant.id,
        grant.granted_by,
        grant.reason,
        grant.created_at,
        grant.expires_at,
        grant.revoked_at,
    )


def _principal(key: ApiKey | None) -> Principal | None:
    if key is None:
        return None
    return Principal(
        account_id=key.account_id, key_id=key.id, permissions=frozenset(key.permissions)
    )
