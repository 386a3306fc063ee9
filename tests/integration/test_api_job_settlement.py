"""Settling an ``unknown`` job through the API: resolve, retry (accepting a duplicate), cancel."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mailbox_worker.db.accounts import PERMISSIONS
from mailbox_worker.jobs.transitions import JOB_SETTLED
from mailbox_worker.states import JobState
from tests.integration.api_harness import RunningApi, job_request, running_api
from tests.integration.conftest import expire_leases

RETRY_BODY = {"accept_duplicate_risk": True}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[RunningApi]:
    async with running_api(tmp_path) as running:
        yield running


@pytest.fixture
async def caller(api: RunningApi) -> tuple[str, str, str]:
    """``(api key id, api key, id of an unknown job)``."""
    account = await api.accounts.create_account("Contoso Ltd")
    issued = await api.accounts.create_api_key(account.id, "test", PERMISSIONS)
    mailbox = await api.connected_mailbox(account.id)
    created = await api.call(
        "POST", "/v1/jobs", key=issued.secret, json_body=job_request(mailbox.id)
    )
    job_id = created.json()["id"]
    [claimed] = await api.queue.claim("dead-worker", 1, dt.timedelta(minutes=1))
    assert claimed.job.id == job_id
    assert await api.queue.start_attempt(claimed.lease)
    await expire_leases(api.app.sessions)
    assert await api.queue.recover_expired_leases() == (0, 1)
    return issued.key_id, issued.secret, job_id


@pytest.mark.parametrize(
    ("action", "body", "state", "code"),
    [
        ("resolve", None, JobState.SENT, "resolved_as_sent"),
        ("retry", RETRY_BODY, JobState.QUEUED, "retried_accepting_duplicate_risk"),
        ("cancel", None, JobState.CANCELLED, "cancelled_by_client"),
    ],
)
async def test_an_unknown_job_is_settled_audited_and_announced(
    api: RunningApi,
    caller: tuple[str, str, str],
    action: str,
    body: Any,
    state: JobState,
    code: str,
) -> None:
    key_id, key, job_id = caller

    answer = await api.call("POST", f"/v1/jobs/{job_id}/{action}", key=key, json_body=body)
    again = await api.call("POST", f"/v1/jobs/{job_id}/{action}", key=key, json_body=body)

    assert answer.status == 200, answer.body
    job = answer.json()
    assert (job["state"], job["last_error"]["code"]) == (state, code)
    if action == "cancel":  # cancelling a cancelled job answers it again
        assert (again.status, again.json()["state"]) == (200, JobState.CANCELLED)
    else:
        assert (again.status, again.error_code) == (409, "job_not_unknown")
    read = (await api.call("GET", f"/v1/jobs/{job_id}", key=key)).json()
    assert (read["events"][-1]["from_state"], read["events"][-1]["to_state"]) == (
        JobState.UNKNOWN,
        state,
    )
    audits = [a for a in await api.accounts.audit_events() if a.action == JOB_SETTLED]
    assert [(a.actor, a.target, a.detail["settlement"]) for a in audits] == [
        (key_id, job_id, action)
    ]
    events = [e for e in await api.app.outbox.all() if e.kind == JOB_SETTLED]
    assert [(e.payload["job_id"], e.payload["state"]) for e in events] == [(job_id, state)]


@pytest.mark.parametrize(
    "body",
    [None, {}, {"accept_duplicate_risk": False}, {"accept_duplicate_risk": "yes"}],
    ids=["no body", "empty", "false", "not a boolean"],
)
async def test_a_retry_must_accept_the_risk_of_a_duplicate(
    api: RunningApi, caller: tuple[str, str, str], body: Any
) -> None:
    _, key, job_id = caller

    answer = await api.call("POST", f"/v1/jobs/{job_id}/retry", key=key, json_body=body)

    assert answer.status in (400, 415), answer.body
    stored = await api.jobs.get(job_id)
    assert stored is not None and stored.state == JobState.UNKNOWN


@pytest.mark.parametrize(("action", "body"), [("resolve", None), ("retry", RETRY_BODY)])
async def test_only_an_unknown_job_is_resolved_or_retried(
    api: RunningApi, caller: tuple[str, str, str], action: str, body: Any
) -> None:
    _, key, job_id = caller
    queued = await api.call("POST", f"/v1/jobs/{job_id}/retry", key=key, json_body=RETRY_BODY)
    assert queued.json()["state"] == JobState.QUEUED

    answer = await api.call("POST", f"/v1/jobs/{job_id}/{action}", key=key, json_body=body)

    assert (answer.status, answer.error_code) == (409, "job_not_unknown")


async def test_settling_needs_jobs_write_and_the_callers_own_job(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, _, job_id = caller
    account = await api.accounts.create_account("Northwind")
    other = (await api.accounts.create_api_key(account.id, "test", PERMISSIONS)).secret
    reader = (await api.accounts.create_api_key(account.id, "r", frozenset({"jobs:read"}))).secret

    theirs = await api.call("POST", f"/v1/jobs/{job_id}/resolve", key=other)
    forbidden = await api.call("POST", f"/v1/jobs/{job_id}/resolve", key=reader)

    assert (theirs.status, theirs.error_code) == (404, "job_not_found")
    assert forbidden.status == 403
    stored = await api.jobs.get(job_id)
    assert stored is not None and stored.state == JobState.UNKNOWN
