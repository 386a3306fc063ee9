"""``GET /v1/jobs`` and ``GET /v1/mailboxes`` over a real socket: filters, cursor pages, the
answers to a query at fault, and what a list never shows."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any
from urllib.parse import urlencode

import pytest

from mailbox_worker.db.accounts import PERMISSIONS
from mailbox_worker.states import JobState
from tests.integration.api_harness import RunningApi, job_request


async def enqueue(api: RunningApi, key: str, mailbox_id: str, reference: str) -> dict[str, Any]:
    api.clock.advance(dt.timedelta(seconds=1))
    body = job_request(mailbox_id) | {"reference": reference}
    answer = await api.call("POST", "/v1/jobs", key=key, json_body=body)
    assert answer.status == 202, answer.body
    job: dict[str, Any] = answer.json()
    return job


async def listed(api: RunningApi, key: str, path: str, **query: Any) -> dict[str, Any]:
    answer = await api.call("GET", f"{path}?{urlencode(query, doseq=True)}", key=key)
    assert answer.status == 200, answer.body
    page: dict[str, Any] = answer.json()
    return page


async def every_page(api: RunningApi, key: str, path: str, items: str, **query: Any) -> list[Any]:
    pages: list[Any] = []
    cursor = None
    while True:
        page = await listed(api, key, path, **query, **({"cursor": cursor} if cursor else {}))
        pages.append([item["id"] for item in page[items]])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages


# -- GET /v1/jobs ---------------------------------------------------------------------------


async def test_jobs_come_newest_first_a_page_at_a_time(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, mailbox_id = caller
    made = [(await enqueue(api, key, mailbox_id, f"INV-{n}"))["id"] for n in range(5)]

    pages = await every_page(api, key, "/v1/jobs", "items", limit=2)

    assert pages == [made[4:2:-1], made[2:0:-1], made[0:1]]


async def test_a_listed_job_is_its_metadata_without_message_nor_events(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, mailbox_id = caller
    job = await enqueue(api, key, mailbox_id, "INV-7")

    page = await listed(api, key, "/v1/jobs")

    assert page == {"items": [job], "next_cursor": None}
    assert "message" not in page["items"][0] and "events" not in page["items"][0]
    assert "Please find our invoice" not in json.dumps(page)


async def test_jobs_are_found_by_reference_state_mailbox_and_time(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    account_id, key, mailbox_id = caller
    other_mailbox = (await api.connected_mailbox(account_id)).id
    first = await enqueue(api, key, mailbox_id, "INV-1")
    second = await enqueue(api, key, other_mailbox, "INV-1")
    third = await enqueue(api, key, mailbox_id, "INV-2")
    cancelled = await api.call("POST", f"/v1/jobs/{second['id']}/cancel", key=key)
    assert cancelled.status == 200, cancelled.body

    async def ids(**query: Any) -> list[str]:
        return [job["id"] for job in (await listed(api, key, "/v1/jobs", **query))["items"]]

    assert await ids(reference="INV-1") == [second["id"], first["id"]]
    assert await ids(mailbox_id=mailbox_id) == [third["id"], first["id"]]
    assert await ids(state="cancelled") == [second["id"]]
    assert await ids(state=["cancelled", "queued"]) == [third["id"], second["id"], first["id"]]
    assert await ids(reference="INV-1", state="queued") == [first["id"]]
    # A time with another offset names the same instant.
    after = dt.datetime.fromisoformat(second["created_at"]).astimezone(
        dt.timezone(dt.timedelta(hours=2))
    )
    assert await ids(created_after=after.isoformat()) == [third["id"], second["id"]]
    assert await ids(created_before=second["created_at"]) == [first["id"]]
    assert await ids(reference="INV-3") == []
    # Instants at the calendar's ends, whose UTC falls outside it: before, or after, every job.
    everything = [third["id"], second["id"], first["id"]]
    assert await ids(created_after="0001-01-01T00:00:00+05:00") == everything
    assert await ids(created_before="9999-12-31T23:59:59-05:00") == everything
    assert await ids(created_before="0001-01-01T00:00:00+05:00") == []


async def test_another_accounts_jobs_are_never_listed(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, mailbox_id = caller
    await enqueue(api, key, mailbox_id, "INV-1")
    other_account, other_key = await api.account_with_key(name="Fabrikam")
    theirs = await enqueue(api, other_key, (await api.connected_mailbox(other_account)).id, "X")

    assert await listed(api, other_key, "/v1/jobs", mailbox_id=mailbox_id) == {
        "items": [],
        "next_cursor": None,
    }
    assert [job["id"] for job in (await listed(api, other_key, "/v1/jobs"))["items"]] == [
        theirs["id"]
    ]


async def test_listing_jobs_needs_jobs_read(api: RunningApi, caller: tuple[str, str, str]) -> None:
    account_id, _, _ = caller
    key = await api.key_for(account_id, PERMISSIONS - {"jobs:read"})

    answer = await api.call("GET", "/v1/jobs", key=key)

    assert (answer.status, answer.error_code) == (403, "forbidden")


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=ten",
        "limit=1&limit=2",
        "state=sending",
        "created_after=2026-01-01T00:00:00",
        "created_before=yesterday",
        "mailbox_id=not%20an%20id",
        "reference=",
        "refrence=INV-1",
    ],
)
async def test_a_query_at_fault_is_refused_naming_the_parameter(
    api: RunningApi, caller: tuple[str, str, str], query: str
) -> None:
    _, key, _ = caller

    answer = await api.call("GET", f"/v1/jobs?{query}", key=key)

    assert (answer.status, answer.error_code) == (400, "invalid_parameter"), answer.body
    assert query.split("=")[0] in answer.json()["error"]["message"]


def tampered(cursor: str) -> str:
    raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[2] = raw[2] + "'"
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")


async def test_a_cursor_the_list_did_not_give_is_refused(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, mailbox_id = caller
    for n in range(2):
        await enqueue(api, key, mailbox_id, f"INV-{n}")
        await api.mailboxes.create(caller[0], "microsoft", ["send"], actor="test")
    jobs_cursor = (await listed(api, key, "/v1/jobs", limit=1))["next_cursor"]
    mailboxes_cursor = (await listed(api, key, "/v1/mailboxes", limit=1))["next_cursor"]
    assert jobs_cursor and mailboxes_cursor

    for path, cursor in [
        ("/v1/jobs", "not-a-cursor"),
        ("/v1/jobs", jobs_cursor[:-2]),
        ("/v1/jobs", tampered(jobs_cursor)),
        ("/v1/jobs", mailboxes_cursor),
        ("/v1/mailboxes", jobs_cursor),
    ]:
        answer = await api.call("GET", f"{path}?cursor={cursor}", key=key)
        assert (answer.status, answer.error_code) == (400, "invalid_cursor"), (path, cursor)


# -- GET /v1/mailboxes ----------------------------------------------------------------------


async def test_mailboxes_page_oldest_first_and_disconnected_only_when_asked(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    account_id, key, first = caller
    made = [first]
    for _ in range(3):
        api.clock.advance(dt.timedelta(seconds=1))
        made.append((await api.connected_mailbox(account_id)).id)
    disconnected = await api.call("DELETE", f"/v1/mailboxes/{made[2]}", key=key)
    assert disconnected.status == 200, disconnected.body

    shown = await every_page(api, key, "/v1/mailboxes", "mailboxes", limit=2)
    everything = await every_page(
        api, key, "/v1/mailboxes", "mailboxes", limit=3, include_disconnected="true"
    )

    assert shown == [[made[0], made[1]], [made[3]]]
    assert everything == [made[0:3], made[3:]]
    states = [m["state"] for m in (await listed(api, key, "/v1/mailboxes"))["mailboxes"]]
    assert "disconnected" not in states and len(states) == 3


@pytest.mark.parametrize("query", ["include_disconnected=yes", "limit=-1", "state=connected"])
async def test_a_mailbox_query_at_fault_is_refused(
    api: RunningApi, caller: tuple[str, str, str], query: str
) -> None:
    _, key, _ = caller

    answer = await api.call("GET", f"/v1/mailboxes?{query}", key=key)

    assert (answer.status, answer.error_code) == (400, "invalid_parameter"), answer.body


async def test_jobs_held_by_a_state_filter_page_too(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, mailbox_id = caller
    made = [(await enqueue(api, key, mailbox_id, "INV-9"))["id"] for _ in range(3)]

    pages = await every_page(
        api, key, "/v1/jobs", "items", limit=1, state=JobState.QUEUED, reference="INV-9"
    )

    assert pages == [[made[2]], [made[1]], [made[0]]]
