"""``PATCH /v1/mailboxes/{id}``: a mailbox's sending limits through the API, with the real
mailbox service; and the limits and pause in every mailbox answer."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mailbox_worker.api.auth import MAILBOXES_READ, MAILBOXES_WRITE
from tests.integration.api_harness import RunningApi, running_api

DEFAULTS = {"max_concurrency": None, "rate_per_minute": None, "daily_recipient_cap": None}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[RunningApi]:
    async with running_api(tmp_path) as running:
        yield running


async def patch(api: RunningApi, key: str, mailbox_id: str, body: Any) -> Any:
    return await api.call("PATCH", f"/v1/mailboxes/{mailbox_id}", key=key, json_body=body)


async def test_limits_are_set_shown_and_reset(api: RunningApi) -> None:
    account_id, key = await api.account_with_key()
    mailbox = await api.connected_mailbox(account_id)
    shown = await api.call("GET", f"/v1/mailboxes/{mailbox.id}", key=key)
    assert (shown.json()["limits"], shown.json()["paused_until"]) == (DEFAULTS, None)

    answer = await patch(
        api, key, mailbox.id, {"limits": {"rate_per_minute": 10, "daily_recipient_cap": 500}}
    )
    assert answer.status == 200, answer.body
    expected = {**DEFAULTS, "rate_per_minute": 10, "daily_recipient_cap": 500}
    assert answer.json()["limits"] == expected
    stored = await api.mailboxes.get(mailbox.id)
    assert stored is not None
    assert (stored.rate_per_minute, stored.daily_recipient_cap) == (10, 500)

    answer = await patch(api, key, mailbox.id, {"limits": {"rate_per_minute": None}})
    assert answer.json()["limits"] == {**expected, "rate_per_minute": None}


async def test_a_pause_is_shown(api: RunningApi) -> None:
    account_id, key = await api.account_with_key()
    mailbox = await api.connected_mailbox(account_id)
    until = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert await api.mailboxes.pause(mailbox.id, until, "throttled")
    answer = await api.call("GET", f"/v1/mailboxes/{mailbox.id}", key=key)
    assert answer.json()["paused_until"] == "2030-01-02T03:04:05.000Z"


@pytest.mark.parametrize(
    "limits",
    [
        {},
        {"max_concurrency": 0},
        {"max_concurrency": 17},
        {"rate_per_minute": "fast"},
        {"daily_recipient_cap": 1.5},
        {"burst": 3},
    ],
)
async def test_invalid_limits_are_refused(api: RunningApi, limits: dict[str, Any]) -> None:
    account_id, key = await api.account_with_key()
    mailbox = await api.connected_mailbox(account_id)
    answer = await patch(api, key, mailbox.id, {"limits": limits})
    assert (answer.status, answer.error_code) == (400, "invalid_limits")
    stored = await api.mailboxes.get(mailbox.id)
    assert stored is not None
    assert (stored.max_concurrency, stored.rate_per_minute, stored.daily_recipient_cap) == (
        None,
        None,
        None,
    )


async def test_only_the_account_admin_may_change_limits(api: RunningApi) -> None:
    account_id, _ = await api.account_with_key()
    mailbox = await api.connected_mailbox(account_id)
    operator = await api.key_for(account_id, frozenset({MAILBOXES_READ, MAILBOXES_WRITE}))
    answer = await patch(api, operator, mailbox.id, {"limits": {"max_concurrency": 2}})
    assert answer.status == 403
    _, stranger = await api.account_with_key(name="Fabrikam")
    answer = await patch(api, stranger, mailbox.id, {"limits": {"max_concurrency": 2}})
    assert (answer.status, answer.error_code) == (404, "mailbox_not_found")
    stored = await api.mailboxes.get(mailbox.id)
    assert stored is not None
    assert stored.max_concurrency is None


async def test_a_disconnected_mailbox_keeps_its_limits(api: RunningApi) -> None:
    account_id, key = await api.account_with_key()
    mailbox = await api.connected_mailbox(account_id)
    assert (await api.call("DELETE", f"/v1/mailboxes/{mailbox.id}", key=key)).status == 200
    answer = await patch(api, key, mailbox.id, {"limits": {"max_concurrency": 2}})
    assert (answer.status, answer.error_code) == (409, "mailbox_disconnected")
