"""``/v1/jobs``: enqueue (idempotently), find, read, cancel and settle (``unknown``) dispatch
jobs."""

from __future__ import annotations

from aiohttp import web

from mailbox_worker.api.auth import JOBS_READ, JOBS_WRITE, require
from mailbox_worker.api.context import services
from mailbox_worker.api.pagination import (
    check_parameters,
    identifier,
    invalid_parameter,
    next_cursor,
    page_after,
    page_limit,
    timestamp,
)
from mailbox_worker.api.parsing import idempotency_key, read_json
from mailbox_worker.api.representations import job_json, job_location
from mailbox_worker.api.services import JobFilter, Submission
from mailbox_worker.states import JobState

LIST = "jobs"
"""The list a ``GET /v1/jobs`` cursor belongs to."""
FILTERS = ("reference", "state", "mailbox_id", "created_after", "created_before")
MAX_REFERENCE = 200


async def enqueue(request: web.Request) -> web.Response:
    """202 with the new job, or 200 with the first job on an idempotent replay."""
    principal = await require(request, JOBS_WRITE)
    key = idempotency_key(request)
    body = await read_json(request, "JobRequest")
    job, created = await services(request).jobs.submit(principal, Submission(body, key))
    return web.json_response(
        job_json(job), status=202 if created else 200, headers={"Location": job_location(job.id)}
    )


async def find(request: web.Request) -> web.Response:
    """200 with a page of the caller's jobs matching the filters, newest first (metadata
    only: never a message), and the cursor of the next page (null on the last)."""
    principal = await require(request, JOBS_READ)
    check_parameters(request, {*FILTERS, "limit", "cursor"}, repeatable={"state"})
    limit = page_limit(request)
    after = page_after(request, LIST)
    wanted = _job_filter(request)
    jobs = await services(request).jobs.find(principal, wanted, limit + 1, after)
    cursor = next_cursor(LIST, [(job.created_at, job.id) for job in jobs], limit)
    return web.json_response(
        {"items": [job_json(job) for job in jobs[:limit]], "next_cursor": cursor}
    )


def _job_filter(request: web.Request) -> JobFilter:
    states = request.query.getall("state", [])
    known = {state.value for state in JobState}
    for state in states:
        if state not in known:
            raise invalid_parameter(f"state must be one of: {', '.join(sorted(known))}")
    reference = request.query.get("reference")
    if reference is not None and not 1 <= len(reference) <= MAX_REFERENCE:
        raise invalid_parameter(f"reference must have 1 to {MAX_REFERENCE} characters")
    return JobFilter(
        mailbox_id=identifier(request, "mailbox_id"),
        state=tuple(sorted(set(states))) or None,
        reference=reference,
        created_after=timestamp(request, "created_after"),
        created_before=timestamp(request, "created_before"),
    )


async def get(request: web.Request) -> web.Response:
    principal = await require(request, JOBS_READ)
    job = await services(request).jobs.get(principal, request.match_info["job_id"])
    return web.json_response(job_json(job))


async def cancel(request: web.Request) -> web.Response:
    principal = await require(request, JOBS_WRITE)
    job = await services(request).jobs.cancel(principal, request.match_info["job_id"])
    return web.json_response(job_json(job))


async def resolve(request: web.Request) -> web.Response:
    principal = await require(request, JOBS_WRITE)
    job = await services(request).jobs.resolve(principal, request.match_info["job_id"])
    return web.json_response(job_json(job))


async def retry(request: web.Request) -> web.Response:
    """The body (``RetryRequest``) must accept the risk of a duplicate."""
    principal = await require(request, JOBS_WRITE)
    await read_json(request, "RetryRequest")
    job = await services(request).jobs.retry(principal, request.match_info["job_id"])
    return web.json_response(job_json(job))
