"""``MailboxWorkerClient``: the daemon's HTTP API as typed async methods.

Each method is one API call (``mailbox_worker/api/openapi.json`` is the contract), except
``wait_for_outcome``, which polls one job until it no longer moves by itself.
"""

from __future__ import annotations

import asyncio
import random as random_module
import ssl as ssl_module
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import quote, urlencode

import aiohttp

from mailbox_worker.client.errors import OutcomeTimeout
from mailbox_worker.client.models import (
    FINAL_STATES,
    NEEDS_A_PERSON,
    BatchItemResult,
    Job,
    JobPage,
    JobRequest,
    JobState,
    Mailbox,
    MailboxConnection,
    Message,
    Mode,
    Provider,
)
from mailbox_worker.client.retries import RetryPolicy
from mailbox_worker.client.transport import Sleep, Transport


def _segment(identifier: str) -> str:
    return quote(identifier, safe="")


def _timestamp(name: str, value: datetime | str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError(f"{name} needs a time zone")
    return value.isoformat()


class MailboxWorkerClient:
    """A client of one daemon, with one API key. Use it as an async context manager::

        async with MailboxWorkerClient("https://mailbox-worker.example", api_key) as client:
            job = await client.enqueue(mailbox_id=..., mode="send", message=...)
            job = await client.wait_for_outcome(job["id"])

    ``timeout`` bounds each attempt in seconds; ``max_retries`` (or a whole ``retry_policy``)
    bounds the retries (see ``mailbox_worker.client.retries``). ``ssl`` is aiohttp's: an
    ``SSLContext`` to trust a private CA, ``True`` for the system's. ``sleep`` and ``clock``
    replace ``asyncio.sleep`` and ``time.monotonic`` (tests observe waits with them).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 30.0,
        max_retries: int = 4,
        retry_policy: RetryPolicy | None = None,
        ssl: ssl_module.SSLContext | bool = True,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = random_module.random,
    ) -> None:
        policy = retry_policy if retry_policy is not None else RetryPolicy(max_retries=max_retries)
        self._transport = Transport(
            base_url,
            api_key,
            session=session,
            timeout=timeout,
            ssl=ssl,
            policy=policy,
            sleep=sleep,
            random=random,
        )
        self._sleep = sleep
        self._clock = clock

    def __repr__(self) -> str:  # never the API key
        return f"MailboxWorkerClient({self._transport.base_url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the HTTP session if the client opened it (not one passed in)."""
        await self._transport.close()

    # -- jobs ------------------------------------------------------------------------------

    async def enqueue(
        self,
        *,
        mailbox_id: str,
        mode: Mode,
        message: Message,
        reference: str | None = None,
        deadline: datetime | str | None = None,
        send_at: datetime | str | None = None,
        priority: int | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Enqueues a job (POST /v1/jobs) and returns it.

        Every call carries an ``Idempotency-Key``: ``idempotency_key`` if given, else a new
        random one, and every retry of the call sends the same key, so a retry after a lost
        answer returns the job already created instead of sending the message twice. Reuse
        a key of your own (an invoice number, say) to make repeated calls safe across
        restarts of your program. ``deadline`` and ``send_at`` must carry a time zone.
        """
        body: dict[str, Any] = {"mailbox_id": mailbox_id, "mode": mode, "message": message}
        if reference is not None:
            body["reference"] = reference
        if deadline is not None:
            body["deadline"] = _timestamp("deadline", deadline)
        if send_at is not None:
            body["send_at"] = _timestamp("send_at", send_at)
        if priority is not None:
            body["priority"] = priority
        key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
        answer = await self._transport.request(
            "POST", "/v1/jobs", body=body, headers={"Idempotency-Key": key}, idempotent=True
        )
        return cast(Job, answer)

    async def enqueue_batch(self, items: Sequence[JobRequest]) -> list[BatchItemResult]:
        """Enqueues many jobs in one request (POST /v1/job-batches, at most 1,000 items) and
        returns one result per item, in order.

        Each item is answered as ``enqueue`` would answer it alone: ``created`` or
        ``existing`` with its ``job``, or ``error`` with the API's ``error`` (one item's
        error does not fail the others). An item without an ``idempotency_key`` gets a new
        random one, and a retry of the call sends the same keys, so a retry after a lost
        answer returns the jobs already created. ``deadline`` and ``send_at`` are RFC 3339
        strings with a time zone.
        """
        body_items: list[dict[str, Any]] = []
        for item in items:
            sent: dict[str, Any] = dict(item)
            sent.setdefault("idempotency_key", str(uuid.uuid4()))
            body_items.append(sent)
        answer = await self._transport.request(
            "POST", "/v1/job-batches", body={"items": body_items}, idempotent=True
        )
        return cast(list[BatchItemResult], answer["items"])

    async def list_jobs(
        self,
        *,
        state: JobState | Sequence[JobState] | None = None,
        mailbox_id: str | None = None,
        reference: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> JobPage:
        """One page of the account's jobs matching every filter given (GET /v1/jobs), newest
        first, without events; pass its ``next_cursor`` as ``cursor`` (with the same
        filters) for the next page. ``state`` may name several states (any of them)."""
        query: list[tuple[str, str]] = []
        if isinstance(state, str):
            query.append(("state", state))
        elif state is not None:
            query.extend(("state", one) for one in state)
        for name, value in (("mailbox_id", mailbox_id), ("reference", reference)):
            if value is not None:
                query.append((name, value))
        for name, moment in (("created_after", created_after), ("created_before", created_before)):
            if moment is not None:
                query.append((name, _timestamp(name, moment)))
        if limit is not None:
            query.append(("limit", str(limit)))
        if cursor is not None:
            query.append(("cursor", cursor))
        path = "/v1/jobs" + (f"?{urlencode(query)}" if query else "")
        answer = await self._transport.request("GET", path, idempotent=True)
        return cast(JobPage, answer)

    async def iterate_jobs(
        self,
        *,
        state: JobState | Sequence[JobState] | None = None,
        mailbox_id: str | None = None,
        reference: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Job]:
        """Every job ``list_jobs`` would list with these filters, page after page (of
        ``page_size``), newest first: ``async for job in client.iterate_jobs(...)``."""
        cursor: str | None = None
        while True:
            page = await self.list_jobs(
                state=state,
                mailbox_id=mailbox_id,
                reference=reference,
                created_after=created_after,
                created_before=created_before,
                limit=page_size,
                cursor=cursor,
            )
            for job in page["items"]:
                yield job
            cursor = page["next_cursor"]
            if cursor is None:
                return

    async def get_job(self, job_id: str) -> Job:
        """The job with its ``events`` (GET /v1/jobs/{id})."""
        answer = await self._transport.request(
            "GET", f"/v1/jobs/{_segment(job_id)}", idempotent=True
        )
        return cast(Job, answer)

    async def cancel_job(self, job_id: str) -> Job:
        """Cancels a queued, held or unknown job; 409 ``ApiError`` in any other state."""
        return await self._action(job_id, "cancel")

    async def resolve_job(self, job_id: str) -> Job:
        """Settles an ``unknown`` job as sent (you saw the message arrive)."""
        return await self._action(job_id, "resolve")

    async def retry_job(self, job_id: str, *, accept_duplicate_risk: bool) -> Job:
        """Queues an ``unknown`` job again. ``accept_duplicate_risk`` must be True: the
        message may then be delivered twice."""
        if not accept_duplicate_risk:
            raise ValueError("retrying an unknown job needs accept_duplicate_risk=True")
        return await self._action(job_id, "retry", {"accept_duplicate_risk": True})

    async def _action(self, job_id: str, action: str, body: dict[str, Any] | None = None) -> Job:
        # Not idempotent: a connection error is raised rather than the request sent again.
        answer = await self._transport.request(
            "POST", f"/v1/jobs/{_segment(job_id)}/{action}", body=body, idempotent=False
        )
        return cast(Job, answer)

    async def wait_for_outcome(
        self,
        job_id: str,
        *,
        timeout: float = 300.0,  # noqa: ASYNC109 - also bounds the last poll interval
        poll_interval: float = 1.0,
        max_poll_interval: float = 10.0,
    ) -> Job:
        """Polls the job until it is final (``sent``, ``drafted``, ``failed``, ``cancelled``,
        ``unknown``) or ``held``, and returns it.

        ``unknown`` and ``held`` need a person (resolve, retry or cancel; the mailbox's admin
        reconnecting): they are returned, not waited on. The interval between polls starts at
        ``poll_interval`` and grows by half each time up to ``max_poll_interval``. Raises
        ``OutcomeTimeout`` (carrying the last job read) after ``timeout`` seconds.
        """
        deadline = self._clock() + timeout
        interval = poll_interval
        while True:
            job = await self.get_job(job_id)
            if job["state"] in FINAL_STATES or job["state"] in NEEDS_A_PERSON:
                return job
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise OutcomeTimeout(job)
            await self._sleep(min(interval, remaining))
            interval = min(interval * 1.5, max_poll_interval)

    # -- mailboxes -------------------------------------------------------------------------

    async def create_mailbox(
        self,
        *,
        provider: Provider,
        capabilities: Sequence[Mode],
        login_hint: str | None = None,
        return_url: str | None = None,
    ) -> MailboxConnection:
        """Creates a mailbox and starts its consent: send its admin to ``authorization_url``."""
        body: dict[str, Any] = {"provider": provider, "capabilities": list(capabilities)}
        if login_hint is not None:
            body["login_hint"] = login_hint
        if return_url is not None:
            body["return_url"] = return_url
        answer = await self._transport.request("POST", "/v1/mailboxes", body=body, idempotent=False)
        return cast(MailboxConnection, answer)

    async def list_mailboxes(self) -> list[Mailbox]:
        """Every mailbox of the account, oldest first."""
        answer = await self._transport.request("GET", "/v1/mailboxes", idempotent=True)
        return cast(list[Mailbox], answer["mailboxes"])

    async def get_mailbox(self, mailbox_id: str) -> Mailbox:
        answer = await self._transport.request(
            "GET", f"/v1/mailboxes/{_segment(mailbox_id)}", idempotent=True
        )
        return cast(Mailbox, answer)

    async def disconnect_mailbox(self, mailbox_id: str) -> Mailbox:
        """Disconnects the mailbox and deletes its tokens; doing it again changes nothing,
        so a connection error is retried."""
        answer = await self._transport.request(
            "DELETE", f"/v1/mailboxes/{_segment(mailbox_id)}", idempotent=True
        )
        return cast(Mailbox, answer)
