"""The client's ``enqueue_batch``, ``list_jobs`` and ``iterate_jobs`` against the real API
(a real socket, the real intake, a real SQLite database)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailbox_worker.client import JobRequest, MailboxWorkerClient
from tests.integration.api_harness import RunningApi, job_request, running_api


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[RunningApi]:
    async with running_api(tmp_path) as running:
        yield running


@pytest.fixture
async def connected(api: RunningApi) -> AsyncIterator[tuple[MailboxWorkerClient, str]]:
    """A client of a new account, and the id of its connected mailbox."""
    account_id, key = await api.account_with_key()
    mailbox = await api.connected_mailbox(account_id)
    async with MailboxWorkerClient(api.base_url, key, max_retries=0) as client:
        yield client, mailbox.id


def item(mailbox_id: str, reference: str, **fields: str) -> JobRequest:
    request = job_request(mailbox_id)
    sent: JobRequest = {
        "mailbox_id": mailbox_id,
        "mode": "send",
        "message": request["message"],
        "reference": reference,
    }
    if "idempotency_key" in fields:
        sent["idempotency_key"] = fields["idempotency_key"]
    return sent


async def test_enqueue_batch_answers_each_item_and_sends_a_key_for_each(
    connected: tuple[MailboxWorkerClient, str],
) -> None:
    client, mailbox_id = connected
    first = await client.enqueue_batch(
        [item(mailbox_id, "INV-1", idempotency_key="inv-1"), item("mbx_" + "0" * 32, "INV-2")]
    )
    assert [(result["index"], result["status"]) for result in first] == [
        (0, "created"),
        (1, "error"),
    ]
    assert first[1]["error"]["code"] == "mailbox_not_found"
    again = await client.enqueue_batch([item(mailbox_id, "INV-1", idempotency_key="inv-1")])
    assert again[0]["status"] == "existing"
    assert again[0]["job"]["id"] == first[0]["job"]["id"]


async def test_list_jobs_filters_and_iterate_jobs_reads_every_page(
    connected: tuple[MailboxWorkerClient, str],
) -> None:
    client, mailbox_id = connected
    results = await client.enqueue_batch([item(mailbox_id, f"INV-{number}") for number in range(7)])
    created = {result["job"]["id"] for result in results}
    assert len(created) == 7
    cancelled = await client.cancel_job(results[0]["job"]["id"])

    page = await client.list_jobs(limit=3)
    assert len(page["items"]) == 3 and page["next_cursor"] is not None
    listed = [job["id"] async for job in client.iterate_jobs(page_size=3)]
    assert len(listed) == 7 and set(listed) == created
    only_cancelled = await client.list_jobs(state="cancelled")
    assert [job["id"] for job in only_cancelled["items"]] == [cancelled["id"]]
    several = await client.list_jobs(state=["cancelled", "queued"], reference="INV-3")
    assert [job["reference"] for job in several["items"]] == ["INV-3"]
    assert [job async for job in client.iterate_jobs(mailbox_id="mbx_" + "1" * 32)] == []
