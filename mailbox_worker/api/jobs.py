"""``/v1/jobs``: enqueue (idempotently), read, cancel and settle (``unknown``) dispatch jobs."""

from __future__ import annotations

from aiohttp import web

from mailbox_worker.api.auth import JOBS_READ, JOBS_WRITE, require
from mailbox_worker.api.context import services
from mailbox_worker.api.parsing import idempotency_key, read_json
from mailbox_worker.api.representations import job_json, job_location
from mailbox_worker.api.services import Submission


async def enqueue(request: web.Request) -> web.Response:
    """202 with the new job, or 200 with the first job on an idempotent replay."""
    principal = await require(request, JOBS_WRITE)
    key = idempotency_key(request)
    body = await read_json(request, "JobRequest")
    job, created = await services(request).jobs.submit(principal, Submission(body, key))
    return web.json_response(
        job_json(job), status=202 if created else 200, headers={"Location": job_location(job.id)}
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
