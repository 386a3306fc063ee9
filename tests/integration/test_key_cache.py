"""A process trusts an API key it verified for ``KEY_CACHE_TTL`` without reading it again:
a revocation in the same process ends that at once, one in another process within the TTL."""

from __future__ import annotations

import datetime as dt

from mailbox_worker.db.accounts import KEY_CACHE_TTL, AccountStore

from .conftest import Stores


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


async def test_a_key_revoked_elsewhere_stops_working_within_the_ttl(stores: Stores) -> None:
    clock = Clock()
    api_process = AccountStore(stores.sessions, clock)
    cli_process = AccountStore(stores.sessions, clock)
    account = await cli_process.create_account("acme")
    issued = await cli_process.create_api_key(account.id, "k", frozenset({"jobs:write"}))
    assert (await api_process.authenticate(issued.secret)) is not None

    assert await cli_process.revoke_api_key(issued.key_id)
    assert (await api_process.authenticate(issued.secret)) is not None  # still trusted
    assert (await cli_process.authenticate(issued.secret)) is None
    clock.now += KEY_CACHE_TTL
    assert (await api_process.authenticate(issued.secret)) is None


async def test_a_key_revoked_in_the_same_process_stops_at_once(stores: Stores) -> None:
    store = AccountStore(stores.sessions, Clock())
    account = await store.create_account("acme")
    issued = await store.create_api_key(account.id, "k", frozenset({"jobs:write"}))
    assert (await store.authenticate(issued.secret)) is not None
    assert await store.revoke_api_key(issued.key_id)
    assert (await store.authenticate(issued.secret)) is None


async def test_a_wrong_secret_is_never_trusted_from_the_cache(stores: Stores) -> None:
    store = AccountStore(stores.sessions, Clock())
    account = await store.create_account("acme")
    issued = await store.create_api_key(account.id, "k", frozenset({"jobs:write"}))
    assert (await store.authenticate(issued.secret)) is not None
    assert (await store.authenticate(issued.secret[:-1] + "x")) is None
