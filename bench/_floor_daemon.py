"""The floor: the steps promise 1 requires between a ``POST /v1/jobs`` and Graph receiving
the message, in a process that does nothing else. ``bench/idle_latency.py`` (layout ``floor``),
``bench/end_to_end.py`` and ``bench/enqueue_http.py`` (``--floor``) run it in the daemon's
place, with the same client, sandbox and PostgreSQL, so that the daemon's figures can be read
against what this machine allows a process that keeps those promises
(docs/performance.md "Twelfth pass").

The steps are the daemon's, each its own committed transaction where the daemon's is
(docs/architecture.md, "Job states" and promise 1):

1. the job is committed before the ``202`` (one ``INSERT`` with its event row), once per
   idempotency key (a key used before answers with its first job);
2. the worker, woken in-process, leases it under an owner of its own claim, in a transaction
   committed before any provider request (one ``UPDATE … FOR UPDATE SKIP LOCKED …
   RETURNING`` with the transition's event);
3. the attempt is marked in flight, under the unexpired lease, and committed before the
   request (one ``UPDATE`` with its event): a crash after it cannot send again blindly;
4. the message is built (from a template) and POSTed, base64, to Graph's ``sendMail`` over
   HTTPS with a token already in memory;
5. the outcome is recorded with its event and the outbox row of the integrator's callback
   (after the receipt: outside ``idle_latency``'s measure, inside ``end_to_end``'s).

It also takes ``POST /v1/job-batches`` (all the items in one statement) and honours
``send_at``.

What it leaves out is everything else the daemon does: the API key's check, validation, the
comparison of a replayed body with the first (409), the mailbox's state (held jobs, refused
mailboxes), promise 5's per-mailbox limits (concurrency, rate, daily cap: the claim takes the
oldest due jobs of any mailbox), the token's store, metrics and logs. It is a bench's
reference, not a queue: no lease renewal or recovery, no retry (a failed send is recorded as
``failed``).

    python bench/_floor_daemon.py --dsn D --port P [--graph URL --ca FILE --mailboxes JSON]
        [--concurrency 8]

``--mailboxes`` maps each ``mailbox_id`` the POSTs may name to its address and a Graph token
(``{"mbx": ["a@contoso.example", "token"]}``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import secrets
import ssl
import sys
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

SCHEMA = """
CREATE TABLE IF NOT EXISTS floor_jobs (
    id text PRIMARY KEY, state text NOT NULL, payload text COMPRESSION lz4 NOT NULL,
    idempotency_key text UNIQUE, request_sha256 text NOT NULL,
    run_after timestamptz NOT NULL, lease_owner text, lease_expires_at timestamptz,
    in_flight_since timestamptz, attempts integer NOT NULL DEFAULT 0,
    finished_at timestamptz, last_error text);
CREATE INDEX IF NOT EXISTS floor_jobs_due ON floor_jobs (state, run_after);
CREATE TABLE IF NOT EXISTS floor_events (
    id bigserial PRIMARY KEY, job_id text NOT NULL, at timestamptz NOT NULL, kind text NOT NULL);
CREATE TABLE IF NOT EXISTS floor_outbox (
    id bigserial PRIMARY KEY, job_id text NOT NULL, kind text NOT NULL,
    created_at timestamptz NOT NULL);
"""

ENQUEUE = """
WITH job AS (INSERT INTO floor_jobs
                 (id, state, payload, idempotency_key, request_sha256, run_after)
             SELECT id, 'queued', payload, key, digest, coalesce(run_after, now())
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
                 AS new (id, payload, key, digest, run_after)
             ON CONFLICT (idempotency_key) DO NOTHING
             RETURNING id, idempotency_key),
events AS (INSERT INTO floor_events (job_id, at, kind) SELECT id, now(), 'enqueued' FROM job)
SELECT id, idempotency_key FROM job
"""
REPLAYED = "SELECT idempotency_key, id FROM floor_jobs WHERE idempotency_key = ANY($1::text[])"
CLAIM = """
WITH leased AS (
    UPDATE floor_jobs SET state = 'running', lease_owner = $1,
                          lease_expires_at = now() + interval '5 minutes'
    WHERE id IN (SELECT id FROM floor_jobs WHERE state = 'queued' AND run_after <= now()
                 ORDER BY run_after LIMIT $2 FOR UPDATE SKIP LOCKED)
    RETURNING id, payload),
events AS (INSERT INTO floor_events (job_id, at, kind) SELECT id, now(), 'running' FROM leased)
SELECT id, payload FROM leased
"""
MARK = """
WITH marked AS (UPDATE floor_jobs SET in_flight_since = now(), attempts = attempts + 1
                WHERE id = $1 AND lease_owner = $2 AND state = 'running'
                  AND lease_expires_at > now()
                RETURNING id)
INSERT INTO floor_events (job_id, at, kind) SELECT id, now(), 'attempt' FROM marked
RETURNING job_id
"""
FINISH = """
WITH done AS (UPDATE floor_jobs SET state = $3, finished_at = now(), last_error = $4,
                                    lease_owner = NULL, lease_expires_at = NULL
              WHERE id = $1 AND lease_owner = $2 AND state = 'running' RETURNING id),
events AS (INSERT INTO floor_events (job_id, at, kind) SELECT id, now(), $3 FROM done)
INSERT INTO floor_outbox (job_id, kind, created_at) SELECT id, 'job.' || $3, now() FROM done
"""


class Floor:
    def __init__(self, arguments: argparse.Namespace) -> None:
        self.arguments = arguments
        self.wake = asyncio.Event()
        self.pool: asyncpg.Pool[Any] | None = None
        self.http: aiohttp.ClientSession | None = None
        self.running: set[asyncio.Task[None]] = set()
        self.worker: asyncio.Task[None] | None = None
        self.mailboxes: dict[str, list[str]] = json.loads(arguments.mailboxes)

    async def start(self, app: web.Application) -> None:
        self.pool = await asyncpg.create_pool(self.arguments.dsn, min_size=2, max_size=4)
        async with self.pool.acquire() as connection:
            await connection.execute(SCHEMA)
        context = ssl.create_default_context(cafile=self.arguments.ca)
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))
        self.worker = asyncio.create_task(self.work())

    async def stop(self, app: web.Application) -> None:
        tasks = [task for task in [self.worker, *self.running] if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.http is not None:
            await self.http.close()
        if self.pool is not None:
            await self.pool.close()

    async def enqueue(self, request: web.Request) -> web.Response:
        """``POST /v1/jobs``: the body stored as it came, once it parsed as JSON."""
        text = await request.text()
        document = json.loads(text)
        document.setdefault("idempotency_key", request.headers.get("Idempotency-Key"))
        (job_id,) = await self.insert([(text, document)])
        return web.json_response({"id": job_id, "state": "queued"}, status=202)

    async def enqueue_batch(self, request: web.Request) -> web.Response:
        """``POST /v1/job-batches``: each item stored as JSON text, all in one statement."""
        items = json.loads(await request.read())["items"]
        ids = await self.insert([(json.dumps(item), item) for item in items])
        answers = [{"status": "created", "id": job_id, "state": "queued"} for job_id in ids]
        return web.json_response({"items": answers})

    async def insert(self, jobs: list[tuple[str, dict[str, Any]]]) -> list[str]:
        """The jobs (their stored text, their document) committed with their events, due at
        their ``send_at`` or now, each once per idempotency key (a key used before answers
        with its first job, whatever the body: the daemon compares the digests too); the
        worker woken. Their ids."""
        assert self.pool is not None
        ids = ["job_" + secrets.token_hex(16) for _ in jobs]
        keys = [document.get("idempotency_key") for _, document in jobs]
        digests = [hashlib.sha256(text.encode()).hexdigest() for text, _ in jobs]
        due = [
            dt.datetime.fromisoformat(document["send_at"]) if "send_at" in document else None
            for _, document in jobs
        ]
        texts = [text for text, _ in jobs]
        inserted = await self.pool.fetch(ENQUEUE, ids, texts, keys, digests, due)
        self.wake.set()
        if len(inserted) == len(jobs):
            return ids
        first = dict(await self.pool.fetch(REPLAYED, [key for key in keys if key]))
        return [
            first.get(key, job_id) if key else job_id for key, job_id in zip(keys, ids, strict=True)
        ]

    async def ready(self, request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    async def work(self) -> None:
        assert self.pool is not None
        while True:
            with contextlib.suppress(TimeoutError):  # the poll: nothing is missed for long
                await asyncio.wait_for(self.wake.wait(), 1.0)
            self.wake.clear()
            free = self.arguments.concurrency - len(self.running)
            if free <= 0:
                continue
            owner = "floor:" + secrets.token_hex(8)  # one per claim, as the daemon's leases
            try:
                claimed = await self.pool.fetch(CLAIM, owner, free)
            except (OSError, asyncpg.PostgresError) as error:  # said, and tried again
                print(f"claim: {error!r}", file=sys.stderr, flush=True)
                await asyncio.sleep(0.1)
                continue
            for job_id, payload in claimed:
                task = asyncio.create_task(self.deliver(job_id, payload, owner))
                self.running.add(task)
                task.add_done_callback(self.done)

    def done(self, task: asyncio.Task[None]) -> None:
        self.running.discard(task)
        self.wake.set()

    async def deliver(self, job_id: str, payload: str, owner: str) -> None:
        """The job sent, then its outcome recorded: ``sent``, or ``failed`` with the error's
        text (a bench must not wait for a job that will never be final)."""
        assert self.pool is not None
        try:
            await self.send(job_id, payload, owner)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # recorded, and the job final
            print(f"{job_id}: {error!r}", file=sys.stderr, flush=True)
            await self.pool.execute(FINISH, job_id, owner, "failed", repr(error))
        else:
            await self.pool.execute(FINISH, job_id, owner, "sent", None)

    async def send(self, job_id: str, payload: str, owner: str) -> None:
        assert self.pool is not None and self.http is not None
        if await self.pool.fetchval(MARK, job_id, owner) is None:
            raise RuntimeError("the lease was lost before the request")
        document = json.loads(payload)
        address, token = self.mailboxes[document["mailbox_id"]]
        mime = build(job_id, address, document["message"])
        async with self.http.post(
            f"{self.arguments.graph}/me/sendMail",
            data=base64.b64encode(mime),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "text/plain",
            },
        ) as answer:
            await answer.read()
            if answer.status != 202:
                raise RuntimeError(f"sendMail answered {answer.status}")


def build(job_id: str, sender: str, message: dict[str, Any]) -> bytes:
    """The message as MIME, from a template: the headers, the text, each attachment's base64
    (already base64 in the request) in lines of 76. The least a correct message takes; the
    daemon builds it with ``email.message`` (``jobs/mime.py``), which does more (encoded
    words, other bodies, folding)."""
    boundary = secrets.token_hex(16)
    parts = [
        f"From: {sender}\r\nTo: {', '.join(each['address'] for each in message['to'])}\r\n"
        f"Subject: {message['subject']}\r\nMessage-ID: <{job_id}@floor.example>\r\n"
        f'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{message.get('text', '')}\r\n"
    ]
    for attachment in message.get("attachments", []):
        content = attachment["content_base64"]
        lines = "\r\n".join(content[at : at + 76] for at in range(0, len(content), 76))
        parts.append(
            f"--{boundary}\r\nContent-Type: {attachment['content_type']}\r\n"
            "Content-Transfer-Encoding: base64\r\n"
            f'Content-Disposition: attachment; filename="{attachment["filename"]}"\r\n\r\n'
            f"{lines}\r\n"
        )
    parts.append(f"--{boundary}--\r\n")
    return "".join(parts).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--graph", default="", help="Graph's base URL (none: nothing is sent)")
    parser.add_argument("--ca", default=None, help="the CA that signs Graph's certificate")
    parser.add_argument("--mailboxes", default="{}")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    arguments = parser.parse_args()
    floor = Floor(arguments)
    app = web.Application(client_max_size=64 * 1024 * 1024)  # a batch of 500 is about 7 MB
    app.router.add_post("/v1/jobs", floor.enqueue)
    app.router.add_post("/v1/job-batches", floor.enqueue_batch)
    app.router.add_get("/readyz", floor.ready)
    app.on_startup.append(floor.start)
    app.on_cleanup.append(floor.stop)
    web.run_app(app, host="127.0.0.1", port=arguments.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
