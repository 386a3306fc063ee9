"""Return origins in the account store, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import pytest

from mailbox_worker.db.accounts import MAX_RETURN_ORIGINS

from .conftest import Stores


async def test_origins_are_replaced_as_a_whole_normalised_and_audited(stores: Stores) -> None:
    account = await stores.accounts.create_account("acme")
    other = await stores.accounts.create_account("other")
    await stores.accounts.set_return_origins(other.id, ["https://other.example"], "cli")

    first = await stores.accounts.set_return_origins(
        account.id, ["https://B.example", "https://a.example:443", "https://b.example/"], "cli"
    )
    second = await stores.accounts.set_return_origins(
        account.id, ["https://b.example", "http://localhost:3000"], "api_key:k1"
    )
    unchanged = await stores.accounts.set_return_origins(
        account.id, ["http://localhost:3000", "https://b.example"], "api_key:k1"
    )

    assert first == ["https://a.example", "https://b.example"]
    assert second == unchanged == ["http://localhost:3000", "https://b.example"]
    assert await stores.accounts.return_origins(account.id) == second
    assert await stores.accounts.return_origins(other.id) == ["https://other.example"]
    changes = [
        (event.actor, event.detail)
        for event in await stores.accounts.audit_events(account.id)
        if event.action == "account.return_origins_changed"
    ]
    assert changes == [
        ("cli", {"added": ["https://a.example", "https://b.example"], "removed": []}),
        ("api_key:k1", {"added": ["http://localhost:3000"], "removed": ["https://a.example"]}),
    ]


async def test_a_bad_origin_changes_nothing(stores: Stores) -> None:
    account = await stores.accounts.create_account("acme")
    await stores.accounts.set_return_origins(account.id, ["https://a.example"], "cli")
    with pytest.raises(ValueError, match=r"'http://b\.example' must use https"):
        await stores.accounts.set_return_origins(
            account.id, ["https://c.example", "http://b.example"], "cli"
        )
    too_many = [f"https://n{number}.example" for number in range(MAX_RETURN_ORIGINS + 1)]
    with pytest.raises(ValueError, match="at most"):
        await stores.accounts.set_return_origins(account.id, too_many, "cli")
    with pytest.raises(LookupError):
        await stores.accounts.set_return_origins("acc_nobody", ["https://a.example"], "cli")
    assert await stores.accounts.return_origins(account.id) == ["https://a.example"]
