"""How long one large request holds the daemon's event loop: ``GET /healthz`` answered every
few milliseconds while a batch is posted, and the longest it waited.

Prints figures; never passes or fails on time. PostgreSQL runs when
MAILBOX_WORKER_TEST_POSTGRES_URL is set (a scratch database is created and dropped).

    .venv/bin/python bench/loop_hold.py [--items 30] [--recipients 500] [--rounds 2]
        [--together 1] [--numbers-mb 7.5] [--backend sqlite|postgres]

Three batches and a single request, each posted ``--rounds`` times (``--together`` copies at
once; fresh keys and domains each time) to one ``mailbox-worker serve`` (the API and its
worker in one process, as deployed by default):

* ``plain``: 500 invoices with a 10 KB PDF and one recipient each (about 7 MB), the batch an
  invoicing app sends;
* ``new domains``: ``--items`` invoices with ``--recipients`` recipients each, every
  recipient's domain internationalised and never seen before (twenty one-letter labels), the
  costliest addresses the API accepts per byte (docs/performance.md, "The addresses' checks");
* ``quoted lists``: ``--items`` invoices with four lists (To, Cc, Bcc, Reply-To) of
  ``--recipients`` addresses each, one of them quoted and the rest at one internationalised
  domain: the lists the email package folds, about 100 µs an address, for the intake's exact
  size bound and the worker's message;
* ``numbers``: a single job request (``POST /v1/jobs``) whose reference is ``--numbers-mb`` of
  floats, which the parser checks one by one in Python and the schema refuses (400).

While a batch is in flight another client asks ``/healthz`` in a loop, one request at a time;
the figures are the batch's answer time and the health checks' p50 and longest. A health
check that waits long is what a load balancer's probe, a worker's lease renewal or any other
request sees meanwhile. Every job is scheduled a day ahead, so the worker claims none.

To measure another checkout, run this script from that checkout's directory (its daemon is
started as ``python -m mailbox_worker.cli serve`` from the working directory).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
from _daemon import database_kinds, scratch_database
from enqueue_http import daemon, job_request, prepare

LETTERS = "äöüßéèêëàâçñøåæœıłđþðğşžčřůéíóúý"
"""Lower-case letters outside ASCII, each an IDNA 2008 label of its own."""
LABELS = 20


def new_domains() -> Iterator[str]:
    """Domains never seen before, each ``LABELS`` one-letter internationalised labels (its
    ASCII form about 160 octets, within RFC 5321's 254 for the address)."""
    for number in itertools.count(uuid.uuid4().int % 10**12):
        digits = []
        for _ in range(LABELS):
            number, digit = divmod(number, len(LETTERS))
            digits.append(LETTERS[digit])
        yield ".".join(digits) + ".example"


def plain_batch(mailbox_id: str) -> bytes:
    pdf = base64.b64encode(b"%PDF-1.4\n" + os.urandom(10_000)).decode()
    first = uuid.uuid4().int % 10**9
    items = [
        {**job_request(mailbox_id, pdf, first + n), "idempotency_key": uuid.uuid4().hex}
        for n in range(500)
    ]
    return json.dumps({"items": items}).encode()


def new_domains_batch(mailbox_id: str, items: int, recipients: int) -> bytes:
    domains = new_domains()
    first = uuid.uuid4().int % 10**9
    batch = []
    for n in range(items):
        item = job_request(mailbox_id, "", first + n)
        del item["message"]["attachments"]
        item["message"]["to"] = [{"address": f"a@{next(domains)}"} for _ in range(recipients)]
        batch.append({**item, "idempotency_key": uuid.uuid4().hex})
    return json.dumps({"items": batch}, ensure_ascii=False).encode()


def quoted_lists_batch(mailbox_id: str, items: int, recipients: int) -> bytes:
    first = uuid.uuid4().int % 10**9
    batch = []
    for n in range(items):
        item = job_request(mailbox_id, "", first + n)
        del item["message"]["attachments"]
        for field in ("to", "cc", "bcc", "reply_to"):
            addresses = [{"address": f'"a b {field}"@fabrikam.example'}]
            addresses += [{"address": f"a{k}@bücher.example"} for k in range(recipients - 1)]
            item["message"][field] = addresses
        batch.append({**item, "idempotency_key": uuid.uuid4().hex})
    return json.dumps({"items": batch}, ensure_ascii=False).encode()


def numbers_request(mailbox_id: str, megabytes: float) -> bytes:
    """A job request whose reference is a list of floats, ``megabytes`` of them: the densest
    JSON the parser checks in Python (each float for its range), refused 400 by the schema."""
    floats = ",".join(["0.5"] * int(megabytes * 1e6 / 4))
    body = json.dumps(job_request(mailbox_id, "", 0))
    return body.replace('"reference": "', f'"reference": [{floats}], "ignored": "', 1).encode()


async def post_while_probing(
    base_url: str, key: str, bodies: list[bytes], path: str = "/v1/job-batches"
) -> dict[str, float]:
    """Post ``bodies`` to ``path`` at once while asking ``/healthz`` one request at a time. A
    batch must be answered with every item created; a single request (``/v1/jobs``), with 400
    (the refused bodies this script sends there)."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    waits: list[float] = []
    done = asyncio.Event()

    async def probe(http: aiohttp.ClientSession) -> None:
        while not done.is_set():
            started = time.perf_counter()
            async with http.get(f"{base_url}/healthz") as answer:
                await answer.read()
            waits.append(time.perf_counter() - started)
            await asyncio.sleep(0.005)

    async def post(http: aiohttp.ClientSession, body: bytes) -> None:
        async with http.post(f"{base_url}{path}", data=body, headers=headers) as answer:
            answered = await answer.json()
        if path != "/v1/job-batches":
            if answer.status != 400:
                raise RuntimeError(f"answered {answer.status}: {answered}")
            return
        results = answered["items"]
        if answer.status != 200 or any(result["status"] != "created" for result in results):
            raise RuntimeError(f"answered {answer.status}: {results[:1]}")

    async with aiohttp.ClientSession() as http, aiohttp.ClientSession() as prober:
        probing = asyncio.create_task(probe(prober))
        await asyncio.sleep(0.2)  # the probe's connection open and its first answers in
        waits.clear()
        started = time.perf_counter()
        await asyncio.gather(*(post(http, body) for body in bodies))
        elapsed = time.perf_counter() - started
        done.set()
        await probing
    return {
        "seconds": elapsed,
        "mb": sum(map(len, bodies)) / 1e6,
        "probes": len(waits),
        "p50_ms": 1000 * statistics.median(waits),
        "max_ms": 1000 * max(waits),
    }


async def run(kind: str, url: str, scratch: Path, args: argparse.Namespace) -> None:
    key, mailbox_id = await prepare(url)
    async with daemon(url, scratch) as (base_url, _pid):
        await post_while_probing(base_url, key, [plain_batch(mailbox_id)])  # warm-up
        together = args.together
        for round_ in range(1, args.rounds + 1):
            for name, bodies in (
                ("plain", [plain_batch(mailbox_id) for _ in range(together)]),
                (
                    "new domains",
                    [
                        new_domains_batch(mailbox_id, args.items, args.recipients)
                        for _ in range(together)
                    ],
                ),
                (
                    "quoted lists",
                    [
                        quoted_lists_batch(mailbox_id, args.items, args.recipients)
                        for _ in range(together)
                    ],
                ),
            ):
                f = await post_while_probing(base_url, key, bodies)
                _print(kind, round_, name, f)
            if args.numbers_mb:
                bodies = [numbers_request(mailbox_id, args.numbers_mb) for _ in range(together)]
                f = await post_while_probing(base_url, key, bodies, "/v1/jobs")
                _print(kind, round_, "numbers", f)


def _print(kind: str, round_: int, name: str, f: dict[str, float]) -> None:
    print(
        f"  {kind:<10} round {round_}  {name:<12} {f['mb']:5.2f} MB answered in "
        f"{f['seconds']:6.2f} s   /healthz p50 {f['p50_ms']:6.1f} ms, longest "
        f"{f['max_ms']:7.1f} ms ({f['probes']:.0f} probes)",
        flush=True,
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--recipients", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--together", type=int, default=1, help="batches posted at once")
    parser.add_argument(
        "--numbers-mb",
        type=float,
        default=7.5,
        help="MB of floats in a refused single request (0: none)",
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append")
    args = parser.parse_args()
    print(
        f"items={args.items} recipients={args.recipients} rounds={args.rounds} "
        f"together={args.together}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="loop-hold-") as directory:
        work = Path(directory)
        for kind in database_kinds(args.backend or ["sqlite", "postgres"]):
            scratch = work / kind
            scratch.mkdir()
            async with scratch_database(kind, scratch) as url:
                await run(kind, url, scratch, args)


if __name__ == "__main__":
    asyncio.run(main())
