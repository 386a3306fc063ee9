"""``/v1/jobs``: enqueue (idempotently), find, read, cancel and settle (``unknown``) dispatch
jobs."""

from __future__ import annotations

from typing import Any

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
from mailbox_worker.api.parsing import (
    body_bytes,
    client_present,
    idempotency_key,
    read_json,
    read_json_items,
)
from mailbox_worker.api.representations import job_json, job_location
from mailbox_worker.api.services import JobFilter, Submission
from mailbox_worker.errors import RequestError, ValidationFailed
from mailbox_worker.states import JobState

LIST = "jobs"
"""The list a ``GET /v1/jobs`` cursor belongs to."""
FILTERS = ("reference", "state", "mailbox_id", "created_after", "created_before")
MAX_REFERENCE = 200
BATCH_SCHEMA = "JobBatchRequest"
BATCH_ITEMS = "items"


async def enqueue(request: web.Request) -> web.Response:
    """202 with the new job, or 200 with the first job on an idempotent replay."""
    principal = await require(request, JOBS_WRITE)
    key = idempotency_key(request)
    spellings: dict[str, str] = {}
    body = await read_json(request, "JobRequest", spellings=spellings)
    # read_json validated it, and spelled its domains.
    submission = Submission(
        body,
        key,
        base64_checked=True,
        spellings=spellings,
        request_bytes=body_bytes(request),
        client_present=client_present(request),
    )
    job, created = await services(request).jobs.submit(principal, submission)
    return web.json_response(
        job_json(job), status=202 if created else 200, headers={"Location": job_location(job.id)}
    )


async def enqueue_batch(request: web.Request) -> web.Response:
    """200 with one result per item (``JobBatchResult``): each item is enqueued, replayed or
    refused as ``POST /v1/jobs`` would answer it alone; the created jobs commit together."""
    principal = await require(request, JOBS_WRITE)
    spellings: dict[str, str] = {}
    body, item_failures = await read_json_items(
        request, BATCH_SCHEMA, BATCH_ITEMS, spellings=spellings
    )
    items: list[Any] = body[BATCH_ITEMS]
    refused: dict[int, RequestError] = dict(item_failures)
    size, present = body_bytes(request), client_present(request)
    submissions = [
        # The items not refused passed their schema (read_json_items).
        (
            index,
            Submission(
                _job_request(item),
                item.get("idempotency_key"),
                base64_checked=True,
                spellings=spellings,
                request_bytes=size,
                client_present=present,
            ),
        )
        for index, item in enumerate(items)
        if index not in refused
    ]
    outcomes = await services(request).jobs.submit_many(
        principal, [submission for _, submission in submissions]
    )
    results: dict[int, dict[str, Any]] = {
        index: _failed(index, error) for index, error in refused.items()
    }
    for (index, _), outcome in zip(submissions, outcomes, strict=True):
        if isinstance(outcome, RequestError):
            results[index] = _failed(index, outcome)
        else:
            job, created = outcome
            status = "created" if created else "existing"
            results[index] = {"index": index, "status": status, "job": job_json(job)}
    return web.json_response({"items": [results[index] for index in range(len(items))]})


def _job_request(item: dict[str, Any]) -> dict[str, Any]:
    """The ``JobRequest`` an item holds: it without its ``idempotency_key`` (so that an item
    and a ``POST /v1/jobs`` of the same request with the same key are the same request)."""
    return {name: value for name, value in item.items() if name != "idempotency_key"}


def _failed(index: int, error: RequestError) -> dict[str, Any]:
    failure: dict[str, Any] = {"code": error.code, "message": error.message}
    if isinstance(error, ValidationFailed) and error.details:
        failure["details"] = [dict(detail) for detail in error.details]
    return {"index": index, "status": "error", "error": failure}


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
