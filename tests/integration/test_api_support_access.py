"""``/v1/account/support-access`` over HTTP (docs/privacy.md PP-3, LU-5): the account admin
grants support access for a limited time, reads it and revokes it, each audited; a grant
expires by itself; the everyday key cannot grant."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .api_harness import RunningApi, running_api

REQUEST = {"hours": 24, "reason": "ticket 4711: invoices not arriving"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[RunningApi]:
    async with running_api(tmp_path) as running:
        yield running


async def test_grant_read_and_revoke_are_audited(api: RunningApi) -> None:
    account_id, key = await api.account_with_key()

    granted = await api.call("POST", "/v1/account/support-access", key=key, json_body=REQUEST)
    current = await api.call("GET", "/v1/account/support-access", key=key)
    revoked = await api.call("DELETE", "/v1/account/support-access", key=key)
    after = await api.call("GET", "/v1/account/support-access", key=key)

    assert granted.status == 201
    grant = granted.json()["grant"]
    assert granted.json()["active"] is True
    assert grant["reason"] == REQUEST["reason"]
    assert grant["revoked_at"] is None
    assert current.json()["grant"]["id"] == grant["id"]
    assert revoked.status == 200
    assert revoked.json()["active"] is False
    assert revoked.json()["revoked"]["id"] == grant["id"]
    assert after.json() == {"active": False, "grant": None}
    actions = [event.action for event in await api.accounts.audit_events(account_id)]
    assert actions[-2:] == ["support.granted", "support.revoked"]


@pytest.mark.parametrize(
    "body",
    [{"hours": 0, "reason": "x"}, {"hours": 169, "reason": "x"}, {"hours": 1, "reason": " "}],
)
async def test_out_of_range_grants_are_refused(api: RunningApi, body: dict[str, object]) -> None:
    _, key = await api.account_with_key()

    answer = await api.call("POST", "/v1/account/support-access", key=key, json_body=body)

    assert answer.status == 400
    assert (await api.call("GET", "/v1/account/support-access", key=key)).json()["grant"] is None


async def test_a_key_without_account_write_cannot_grant(api: RunningApi) -> None:
    _, key = await api.account_with_key(frozenset({"jobs:read", "account:read"}))

    answer = await api.call("POST", "/v1/account/support-access", key=key, json_body=REQUEST)

    assert answer.status == 403


async def test_a_grant_expires_by_itself(api: RunningApi) -> None:
    account_id, key = await api.account_with_key()
    await api.call("POST", "/v1/account/support-access", key=key, json_body={**REQUEST, "hours": 2})

    api.clock.advance(dt.timedelta(hours=2))

    assert (await api.call("GET", "/v1/account/support-access", key=key)).json()["active"] is False
    assert await api.app.support_grants.record_access(account_id, "cli", "job_x", "x") is None
