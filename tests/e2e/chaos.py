"""The chaos soak's machinery: daemons as real processes under faults, kills and restarts.

``run_soak`` connects many sandbox mailboxes, enqueues thousands of jobs through the API, lets the
sandbox inject random faults (``SandboxControls.start_chaos``), SIGKILLs and restarts the daemon
processes, takes one mailbox's grant away mid-run (and gives it back), optionally restarts
PostgreSQL, waits until every job is final, then reads the database, the sandbox's stored
messages and its fault record, and returns a ``SoakReport`` (``report.lines()`` prints it,
``report.violations()`` lists what breaks the contract of docs/architecture.md "Job states").
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re
import signal
import ssl
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from mailbox_worker.db.models import Job, JobEvent
from mailbox_worker.demo import play_admin_consent
from mailbox_worker.sandbox import Sandbox
from mailbox_worker.sandbox.controls import AMBIGUOUS_KINDS
from mailbox_worker.sandbox.microsoft.state import ConcurrencyRefusal
from mailbox_worker.states import TERMINAL

from .conftest import Daemon, call, connect_mailbox, start

FINAL = {str(state) for state in TERMINAL}
IN_FLIGHT_CODES = {"worker_lost"}


@dataclass(frozen=True)
class SoakPlan:
    """How big and how rough one soak run is."""

    jobs: int
    mailboxes: int
    processes: int
    kills_at: tuple[float, ...]
    """When each process is SIGKILLed (and restarted), as fractions of ``chaos_seconds``; the
    n-th process 0.05 later per n. Kept ``lease_seconds`` + a few seconds clear of a PostgreSQL
    restart, so that a job left in flight by the restart is not taken for one left by a kill."""
    postgres_restarts_at: tuple[float, ...] = ()
    concurrency: int = 8
    per_mailbox_concurrency: int = 4
    lease_seconds: float = 4.0
    request_timeout: float = 2.0
    chaos_seconds: float = 40.0
    finish_within: float = 150.0
    seed: int = 20261205
    draft_every: int = 10  # every n-th job is a draft, the others are sent
    hot_every: int = 2  # every n-th job goes to one "hot" mailbox, to press its limit of 4
    latency: float = 0.15  # seconds every Graph call without a fault takes (chaos's ``latency``)
    rates: dict[str, float] = field(
        default_factory=lambda: {
            "throttle": 0.04,
            "unavailable": 0.03,
            "reset": 0.006,
            "slow": 0.04,
            "accept_then_error": 0.006,
            "accept_then_reset": 0.006,
            "accept_then_hang": 0.004,
        }
    )


@dataclass
class Interval:
    """A job held in ``running`` by one worker, from its claim to the next state change."""

    worker: str
    job_id: str
    start: dt.datetime
    end: dt.datetime | None
    end_code: str | None = None
    ended_by_owner: bool = False


def describe_refusal(refusal: ConcurrencyRefusal) -> str:
    """One refused request and what held its mailbox's 4 slots, for a failure's message."""
    holders = ", ".join(
        f"{holder.operation} {holder.client_request_id} for {holder.held_seconds}s"
        + (" (its client had hung up)" if holder.client_hung_up else "")
        for holder in refusal.holders
    )
    return (
        f"{refusal.operation} {refusal.client_request_id} to {refusal.mailbox} refused; "
        f"held by: {holders}; excused by: {refusal.excused_by or 'nothing'}"
    )


@dataclass
class SoakReport:
    """What one soak run counted; ``violations`` turns it into failures."""

    plan: SoakPlan
    elapsed: float
    enqueued: int
    states: Counter[str]
    lost: list[str]
    lost_detail: list[str]
    sent_without_delivery: list[str]
    deliveries: int
    duplicates_not_unknown: dict[str, int]
    duplicates_unknown: int
    delivered_but_failed: list[str]
    unknown_by_code: Counter[str]
    unknown_explained_by_fault: int
    unknown_explained_by_kill: int
    unknown_explained_by_traced_fault: int
    unknown_unexplained: list[tuple[str, str]]
    peak_running: dict[str, int]
    peak_running_detail: dict[str, list[str]]
    peak_requests_per_mailbox: dict[str, int]
    requests_refused_over_mailbox_limit: int
    concurrency_refusals: list[ConcurrencyRefusal]
    faults: dict[str, int]
    kills: int
    unexpected_exits: list[str]
    hung_at_stop: list[str]
    answered_499: int
    postgres_restarts: int
    grant_lost: str
    grant_lost_state: str
    token_refreshes: int
    timeline: list[str]

    def lines(self) -> list[str]:
        """The counts, one per line, for the test's output."""
        worst_process = max(self.peak_running.values(), default=0)
        return [
            f"elapsed: {self.elapsed:.1f}s; {self.plan.processes} process(es), "
            f"{self.plan.mailboxes} mailboxes",
            f"jobs enqueued: {self.enqueued}; by final state: {dict(sorted(self.states.items()))}",
            f"lost (missing or not final): {len(self.lost)} {self.lost[:5]}",
            *(f"  {detail}" for detail in self.lost_detail),
            f"sent without a delivery: {len(self.sent_without_delivery)} "
            f"{self.sent_without_delivery[:5]}",
            f"deliveries (stored messages): {self.deliveries}; duplicates among jobs not unknown: "
            f"{len(self.duplicates_not_unknown)} {sorted(self.duplicates_not_unknown.items())[:5]}"
            f"; duplicates among unknown jobs: {self.duplicates_unknown}",
            f"delivered but recorded failed/cancelled: {len(self.delivered_but_failed)} "
            f"{self.delivered_but_failed[:5]}",
            f"unknown by code: {dict(self.unknown_by_code)}",
            f"unknown explained: by an ambiguous fault on its Message-ID "
            f"{self.unknown_explained_by_fault}, in flight at a kill "
            f"{self.unknown_explained_by_kill}, by an ambiguous fault on a request its "
            f"client-request-id traces to it {self.unknown_explained_by_traced_fault}; unexplained "
            f"{len(self.unknown_unexplained)} {self.unknown_unexplained[:8]}",
            f"peak running jobs per process: max {worst_process} (concurrency "
            f"{self.plan.concurrency}); per incarnation {sorted(self.peak_running.values())}",
            *(
                f"  {worker} at its peak: {detail}"
                for worker, detail in self.peak_running_detail.items()
            ),
            f"peak concurrent Graph requests per mailbox (sandbox): max "
            f"{max(self.peak_requests_per_mailbox.values(), default=0)}; refused as over the "
            f"mailbox limit of 4 (a 5th concurrent request): "
            f"{self.requests_refused_over_mailbox_limit}, of which "
            f"{self.requests_refused_over_mailbox_limit - self.refusals_unexplained} while a slot "
            "was still held for a request its client had hung up on",
            *(f"  {describe_refusal(refusal)}" for refusal in self.concurrency_refusals[:5]),
            f"faults injected: {dict(sorted(self.faults.items()))}",
            f"SIGKILLs: {self.kills}; exits on their own: {self.unexpected_exits}; hung at stop: "
            f"{self.hung_at_stop}; PostgreSQL restarts: {self.postgres_restarts}; API answers "
            f"499 to a client still waiting: {self.answered_499}",
            f"grant lost: {self.grant_lost} (reached {self.grant_lost_state}), "
            f"token refreshes: {self.token_refreshes}",
            "timeline: " + "; ".join(self.timeline),
        ]

    @property
    def refusals_unexplained(self) -> int:
        """Refusals as over the limit that the daemon's own requests explain: no slot of the
        mailbox was held for a request its client (the daemon) had given up on and that
        excused no other refusal (``ConcurrencyRefusal.excused_by``). A provider may keep
        working on, and counting, a request after its client timed out or died; the daemon no
        longer has it open. Counted from the sandbox's counter, so a refusal it did not record
        stays unexplained."""
        explained = sum(1 for each in self.concurrency_refusals if each.excused_by is not None)
        return self.requests_refused_over_mailbox_limit - explained

    def violations(self) -> list[str]:
        """Each broken promise, as a sentence naming its count."""
        found = []
        if self.lost:
            found.append(f"{len(self.lost)} jobs lost or not final")
        if self.sent_without_delivery:
            found.append(f"{len(self.sent_without_delivery)} jobs sent without a delivery")
        if self.duplicates_not_unknown:
            found.append(f"{len(self.duplicates_not_unknown)} duplicate deliveries (not unknown)")
        if self.delivered_but_failed:
            found.append(f"{len(self.delivered_but_failed)} delivered jobs recorded as not sent")
        if self.unknown_unexplained:
            found.append(f"{len(self.unknown_unexplained)} unknown jobs unexplained")
        over = {
            name: peak for name, peak in self.peak_running.items() if peak > self.plan.concurrency
        }
        if over:
            found.append(f"running jobs above concurrency {self.plan.concurrency}: {over}")
        if max(self.peak_requests_per_mailbox.values(), default=0) > 4:
            found.append("more than 4 concurrent requests for a mailbox")
        if self.refusals_unexplained:
            found.append(
                f"{self.refusals_unexplained} requests over the limit of 4 concurrent requests "
                "per mailbox (refused 429 by the sandbox) while the daemon held 4 open"
            )
        if self.unexpected_exits:
            found.append(f"processes exited on their own: {self.unexpected_exits}")
        if self.hung_at_stop:
            found.append(f"processes hung at stop: {self.hung_at_stop}")
        if self.answered_499:
            found.append(f"{self.answered_499} API answers 499 to a client still waiting")
        if self.grant_lost_state != "reauth_required":
            found.append(
                f"the revoked mailbox never reached reauth_required ({self.grant_lost_state})"
            )
        return found


# -- analysis (pure) ---------------------------------------------------------------------------


def running_intervals(events: Iterable[JobEvent]) -> list[Interval]:
    """Every stay in ``running``: from the claim (its worker) to the next state change."""
    by_job: defaultdict[str, list[JobEvent]] = defaultdict(list)
    for event in events:
        if event.kind == "state":
            by_job[event.job_id].append(event)
    intervals = []
    for history in by_job.values():
        history.sort(key=lambda event: event.id)
        for index, event in enumerate(history):
            if event.to_state != "running":
                continue
            end = next(
                (later for later in history[index + 1 :] if later.from_state == "running"), None
            )
            intervals.append(
                Interval(
                    event.worker or "?",
                    event.job_id,
                    event.at,
                    None if end is None else end.at,
                    None if end is None else f"{end.to_state}/{end.code}",
                    end is not None and end.worker == event.worker,
                )
            )
    return intervals


NEVER = dt.datetime.max.replace(tzinfo=dt.UTC)


def peak_overlap(intervals: Iterable[Interval]) -> dict[str, tuple[int, dt.datetime]]:
    """Per worker, the most intervals open at once and the first moment it was reached (an
    end before a start at the same time)."""
    points: defaultdict[str, list[tuple[dt.datetime, int]]] = defaultdict(list)
    for interval in intervals:
        points[interval.worker].append((interval.start, 1))
        points[interval.worker].append((interval.end or NEVER, -1))
    peaks = {}
    for worker, marks in points.items():
        now = peak = 0
        moment = NEVER
        for at, step in sorted(marks, key=lambda mark: (mark[0], mark[1])):
            now += step
            if now > peak:
                peak, moment = now, at
        peaks[worker] = (peak, moment)
    return peaks


def open_at(intervals: Iterable[Interval], worker: str, moment: dt.datetime) -> list[str]:
    """The intervals of ``worker`` open at ``moment``, described for a report."""
    return [
        f"{interval.job_id[:8]} {interval.start.time()}-"
        f"{'?' if interval.end is None else interval.end.time()} {interval.end_code}"
        f"{'' if interval.ended_by_owner else ' (ended by another)'}"
        for interval in intervals
        if interval.worker == worker and interval.start <= moment < (interval.end or NEVER)
    ]


def in_flight_at_kill(events: list[JobEvent], kills: dict[int, dt.datetime]) -> bool:
    """Whether the job was in flight when its process was SIGKILLed: that process started a
    provider attempt before the kill, never recorded its outcome, and the job left ``running``
    only after the kill (so its lease was still held then)."""
    ordered = sorted(events, key=lambda event: event.id)
    for index, event in enumerate(ordered):
        if event.kind != "attempt" or event.code != "started" or not event.worker:
            continue
        killed_at = kills.get(_pid(event.worker))
        if killed_at is None or event.at > killed_at:
            continue
        later = [each for each in ordered[index + 1 :] if each.kind == "state"]
        if any(each.worker == event.worker for each in later):
            continue
        left = next((each for each in later if each.from_state == "running"), None)
        if left is None or left.at >= killed_at:
            return True
    return False


LOGGED_REQUEST = re.compile(r"job=(job_\w+) client-request-id=([\w-]+)")


def requests_by_job(logs: Iterable[Path]) -> defaultdict[str, set[str]]:
    """The ``client-request-id`` of each Graph request the daemons logged, by job id (the
    provider logs every failed request with both; docs/providers.md)."""
    found: defaultdict[str, set[str]] = defaultdict(set)
    for log in logs:
        if not log.exists():
            continue
        for match in LOGGED_REQUEST.finditer(log.read_text(errors="replace")):
            found[match.group(1)].add(match.group(2))
    return found


def _pid(worker: str) -> int:
    try:
        return int(worker.rsplit(":", 2)[1])
    except (IndexError, ValueError):
        return -1


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Fleet:
    """The daemon processes of one run and what happened to them."""

    daemons: list[Daemon]
    kills_at: dict[int, dt.datetime] = field(default_factory=dict)
    """When each killed (or self-exited, when noticed) process died, by pid."""
    kills: int = 0
    unexpected_exits: list[str] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)

    def note(self, happening: str) -> None:
        """Remember what the run did, with the wall-clock time (the events' clock)."""
        self.timeline.append(f"{dt.datetime.now(dt.UTC).time()} {happening}")

    async def kill_and_restart(self, index: int, down_for: float) -> None:
        daemon = self.daemons[index]
        assert daemon.process is not None
        self.kills_at[daemon.process.pid] = dt.datetime.now(dt.UTC)
        daemon.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(daemon.process.wait, 30)
        self.kills += 1
        self.note(f"process {index} (pid {daemon.process.pid}) SIGKILLed")
        await asyncio.sleep(down_for)
        await start(daemon)
        self.note(f"process {index} restarted (pid {daemon.process.pid})")

    async def watch(self, stop: asyncio.Event) -> None:
        """Restart a process that died without being killed (and note it)."""
        while not stop.is_set():
            for index, daemon in enumerate(self.daemons):
                process = daemon.process
                if process is None or process.pid in self.kills_at:
                    continue
                if process.poll() is not None:
                    self.unexpected_exits.append(f"process {index} exit {process.returncode}")
                    self.kills_at[process.pid] = dt.datetime.now(dt.UTC)
                    await start(daemon)
            await asyncio.sleep(0.5)

    def stop(self) -> list[str]:
        """SIGTERM everyone; SIGKILL and name those still running after 60 s."""
        hung = []
        for daemon in self.daemons:
            if daemon.process is not None and daemon.process.poll() is None:
                daemon.process.send_signal(signal.SIGTERM)
        for index, daemon in enumerate(self.daemons):
            if daemon.process is None:
                continue
            try:
                daemon.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                hung.append(f"process {index}")
                daemon.process.kill()
                daemon.process.wait(timeout=30)
        return hung


def job_body(mailbox_id: str, number: int, mode: str) -> dict[str, Any]:
    return {
        "mailbox_id": mailbox_id,
        "mode": mode,
        "reference": f"soak-{number}",
        "message": {
            "to": [{"address": "ap@fabrikam.example"}],
            "subject": f"Invoice {number}",
            "text": "Attached.",
            "attachments": [
                {
                    "filename": f"invoice-{number}.pdf",
                    "content_type": "application/pdf",
                    "content_base64": base64.b64encode(b"%PDF-1.4 soak").decode(),
                }
            ],
        },
    }


CLIENT_CLOSED_REQUEST = 499
ANSWERED_499: Counter[str] = Counter()
"""How often a daemon answered 499 ("client closed the request") to a client still waiting."""


async def _with_retries(attempt: Callable[[], Awaitable[tuple[int, Any]]]) -> tuple[int, Any]:
    """An API call retried while its daemon is down (killed, restarting) or answers 5xx — or
    499, which a daemon must never answer to a client still listening (counted)."""
    for _ in range(200):
        try:
            status, body = await attempt()
        except (aiohttp.ClientConnectionError, TimeoutError):
            await asyncio.sleep(0.2)
            continue
        if status == CLIENT_CLOSED_REQUEST:
            ANSWERED_499["answered"] += 1
        if status >= 500 or status == CLIENT_CLOSED_REQUEST:
            await asyncio.sleep(0.2)
            continue
        return status, body
    raise AssertionError("the daemons did not answer for 40 s")


async def connected_mailbox(
    http: aiohttp.ClientSession,
    plain: aiohttp.ClientSession,
    daemon: Daemon,
    address: str,
    context: ssl.SSLContext,
) -> str:
    """``connect_mailbox`` (both capabilities), then checked ``connected``; returns its id."""
    mailbox_id = await connect_mailbox(http, plain, daemon, address, context, ("send", "draft"))
    _, mailbox = await call(http, daemon, "GET", f"/v1/mailboxes/{mailbox_id}")
    assert mailbox["state"] == "connected", mailbox
    return mailbox_id


async def run_soak(
    plan: SoakPlan,
    sandbox: Sandbox,
    daemons: list[Daemon],
    database_url: str,
    restart_postgres: Callable[[], None] | None = None,
) -> SoakReport:
    """One soak run (see the module docstring); the daemons must not be started yet."""
    began = time.monotonic()
    ANSWERED_499.clear()
    first = daemons[0]
    account = first.cli("accounts", "create", "Soak Ltd")
    api_key = first.cli("keys", "create", "--account", account)
    context = ssl.create_default_context(cafile=str(sandbox.ca_path))
    addresses = [f"billing{index}@contoso.example" for index in range(plan.mailboxes)]
    for address in addresses:
        sandbox.state.add_user(address, f"Billing {address}")
    fleet = Fleet(daemons)
    await asyncio.gather(*(start(daemon) for daemon in daemons))
    headers = {"Authorization": f"Bearer {api_key}"}
    timeout = aiohttp.ClientTimeout(total=30)
    reader = create_async_engine(database_url)
    stop_watch = asyncio.Event()
    try:
        async with (
            aiohttp.ClientSession(headers=headers, timeout=timeout) as http,
            aiohttp.ClientSession(timeout=timeout) as plain,
        ):
            mailbox_ids = [
                await connected_mailbox(http, plain, first, address, context)
                for address in addresses
            ]
            sandbox.state.start_chaos(
                plan.rates,
                seed=plan.seed,
                duration=plan.chaos_seconds,
                slow_delay=plan.request_timeout / 4,
                hang_limit=plan.request_timeout * 5,
                latency=plan.latency,
            )
            watcher = asyncio.create_task(fleet.watch(stop_watch))
            job_ids: list[str] = []
            gate = asyncio.Semaphore(16)

            async def enqueue(number: int) -> None:
                daemon = daemons[number % len(daemons)]
                mode = "draft" if number % plan.draft_every == 0 else "send"
                hot = number % plan.hot_every == 1 and len(mailbox_ids) > 1
                target = mailbox_ids[1] if hot else mailbox_ids[number % len(mailbox_ids)]
                body = job_body(target, number, mode)
                key = {"Idempotency-Key": f"soak-{plan.seed}-{number}"}
                async with gate:
                    status, job = await _with_retries(
                        lambda: call(http, daemon, "POST", "/v1/jobs", json=body, headers=key)
                    )
                assert status in (200, 201, 202), (status, job)
                job_ids.append(str(job["id"]))

            enqueuing = asyncio.gather(*(enqueue(number) for number in range(plan.jobs)))
            revoked = addresses[0]
            revoked_state = await _chaos_script(
                plan,
                sandbox,
                fleet,
                http,
                first,
                revoked,
                mailbox_ids[0],
                context,
                plain,
                restart_postgres,
            )
            await enqueuing
            await _wait_until_final(reader, plan, job_ids, began)
            stop_watch.set()
            await watcher
    finally:
        stop_watch.set()
        hung = await asyncio.to_thread(fleet.stop)
        sandbox.state.stop_chaos()
    try:
        async with async_sessionmaker(reader, expire_on_commit=False)() as session:
            jobs = list(await session.scalars(select(Job)))
            events = list(await session.scalars(select(JobEvent)))
    finally:
        await reader.dispose()
    return _report(
        plan=plan,
        elapsed=time.monotonic() - began,
        job_ids=job_ids,
        jobs=jobs,
        events=events,
        sandbox=sandbox,
        fleet=fleet,
        hung=hung,
        revoked=revoked,
        revoked_state=revoked_state,
        postgres_restarts=len(plan.postgres_restarts_at) if restart_postgres else 0,
        answered_499=ANSWERED_499["answered"],
    )


async def _chaos_script(
    plan: SoakPlan,
    sandbox: Sandbox,
    fleet: Fleet,
    http: aiohttp.ClientSession,
    daemon: Daemon,
    revoked: str,
    revoked_id: str,
    context: ssl.SSLContext,
    plain: aiohttp.ClientSession,
    restart_postgres: Callable[[], None] | None,
) -> str:
    """Kills, the grant loss (and the reconnection) and the PostgreSQL restart, on a timeline
    over ``plan.chaos_seconds``; returns the state the revoked mailbox reached."""
    span = plan.chaos_seconds
    began = time.monotonic()

    async def at(fraction: float) -> None:
        await asyncio.sleep(max(0.0, began + span * fraction - time.monotonic()))

    async def kills(index: int) -> None:
        for fraction in plan.kills_at:
            await at(fraction + 0.05 * index)
            await fleet.kill_and_restart(index, down_for=0.5)

    async def postgres() -> None:
        if restart_postgres is None:
            return
        for fraction in plan.postgres_restarts_at:
            await at(fraction)
            fleet.note("PostgreSQL restarting")
            await asyncio.to_thread(restart_postgres)
            fleet.note("PostgreSQL restarted")

    async def grant_loss() -> str:
        await at(0.2)
        user = sandbox.state.find_user(revoked)
        assert user is not None
        sandbox.state.apply_scenario(revoked, "revoke_sessions")
        fleet.note(f"{revoked}: sign-in sessions and access tokens revoked")
        for token, issued in list(sandbox.state.access_tokens.items()):
            if issued.object_id == user.object_id:  # as continuous access evaluation does
                del sandbox.state.access_tokens[token]
        reached = "connected"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            _, mailbox = await _with_retries(
                lambda: call(http, daemon, "GET", f"/v1/mailboxes/{revoked_id}")
            )
            reached = str(mailbox["state"])
            if reached == "reauth_required":
                fleet.note(f"{revoked}: reauth_required seen")
                break
            await asyncio.sleep(0.5)
        await at(0.6)
        for _ in range(20):  # the daemon may be killed between the consent and its callback
            status, started = await _with_retries(
                lambda: call(http, daemon, "POST", f"/v1/mailboxes/{revoked_id}/connect", json={})
            )
            assert status == 200, started
            try:
                await play_admin_consent(plain, started["authorization_url"], revoked, context)
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.5)
                continue
            _, mailbox = await _with_retries(
                lambda: call(http, daemon, "GET", f"/v1/mailboxes/{revoked_id}")
            )
            if mailbox["state"] == "connected":
                fleet.note(f"{revoked}: connected again")
                break
        return reached

    results = await asyncio.gather(
        grant_loss(), postgres(), *(kills(index) for index in range(len(fleet.daemons)))
    )
    return str(results[0])


async def _wait_until_final(
    reader: AsyncEngine, plan: SoakPlan, job_ids: list[str], began: float
) -> None:
    """Until every enqueued job is in a final state, or ``plan.finish_within`` is over."""
    while time.monotonic() - began < plan.finish_within:
        try:
            async with reader.connect() as connection:
                rows = (
                    await connection.execute(select(Job.state, func.count()).group_by(Job.state))
                ).all()
        except Exception:  # PostgreSQL restarting: look again
            await asyncio.sleep(1)
            continue
        counts = {str(state): int(count) for state, count in rows}
        if sum(counts.values()) >= len(job_ids) and set(counts) <= FINAL:
            return
        await asyncio.sleep(1)


def _key(message_id: str | None) -> str:
    return (message_id or "").strip().strip("<>").lower()


def _report(
    *,
    plan: SoakPlan,
    elapsed: float,
    job_ids: list[str],
    jobs: list[Job],
    events: list[JobEvent],
    sandbox: Sandbox,
    fleet: Fleet,
    hung: list[str],
    revoked: str,
    revoked_state: str,
    postgres_restarts: int,
    answered_499: int,
) -> SoakReport:
    by_id = {job.id: job for job in jobs}
    lost = [job_id for job_id in job_ids if job_id not in by_id or by_id[job_id].state not in FINAL]
    stored = Counter(_key(message.internet_message_id) for message in sandbox.state.messages())
    history: defaultdict[str, list[JobEvent]] = defaultdict(list)
    for event in sorted(events, key=lambda event: event.id):
        history[event.job_id].append(event)
    lost_detail = [
        f"{job_id}: created {by_id[job_id].created_at.time()} "
        + "; ".join(
            f"{event.at.time()} {event.kind} {event.from_state}->{event.to_state} {event.code}"
            for event in history[job_id]
        )
        for job_id in lost[:5]
        if job_id in by_id
    ]
    delivered = {job.id: stored[_key(job.message_id)] for job in jobs}
    sent_without = [
        job.id for job in jobs if job.state in ("sent", "drafted") and not delivered[job.id]
    ]
    duplicates = {
        job.id: delivered[job.id]
        for job in jobs
        if delivered[job.id] > 1 and job.state != "unknown"
    }
    duplicates_unknown = sum(1 for job in jobs if delivered[job.id] > 1 and job.state == "unknown")
    not_sent = [
        job.id
        for job in jobs
        if delivered[job.id] and job.state not in ("sent", "drafted", "unknown")
    ]
    faults_by_message = {
        _key(message_id): labels
        for message_id, labels in sandbox.state.faults_by_message_id.items()
    }
    events_by_job: defaultdict[str, list[JobEvent]] = defaultdict(list)
    for event in events:
        events_by_job[event.job_id].append(event)
    by_fault = by_kill = by_trace = 0
    requests = requests_by_job(daemon.log_path for daemon in fleet.daemons)
    by_request = sandbox.state.faults_by_request_id
    unexplained = []
    unknown_codes: Counter[str] = Counter()
    for job in jobs:
        if job.state != "unknown":
            continue
        unknown_codes[job.last_error_code or "?"] += 1
        if set(faults_by_message.get(_key(job.message_id), ())) & AMBIGUOUS_KINDS:
            by_fault += 1
        elif in_flight_at_kill(events_by_job[job.id], fleet.kills_at):
            by_kill += 1
        elif any(by_request.get(each) in AMBIGUOUS_KINDS for each in requests[job.id]):
            by_trace += 1
        else:
            unexplained.append((job.id, job.last_error_code or "?"))
    counters = sandbox.state.counters()
    intervals = running_intervals(events)
    peaks = peak_overlap(intervals)
    return SoakReport(
        plan=plan,
        elapsed=elapsed,
        enqueued=len(job_ids),
        states=Counter(str(job.state) for job in jobs),
        lost=lost,
        lost_detail=lost_detail,
        sent_without_delivery=sent_without,
        deliveries=sum(stored.values()),
        duplicates_not_unknown=duplicates,
        duplicates_unknown=duplicates_unknown,
        delivered_but_failed=not_sent,
        unknown_by_code=unknown_codes,
        unknown_explained_by_fault=by_fault,
        unknown_explained_by_kill=by_kill,
        unknown_explained_by_traced_fault=by_trace,
        unknown_unexplained=unexplained,
        peak_running={worker: peak for worker, (peak, _) in peaks.items()},
        peak_running_detail={
            worker: open_at(intervals, worker, moment)
            for worker, (peak, moment) in peaks.items()
            if peak > plan.concurrency
        },
        peak_requests_per_mailbox=dict(sandbox.state.peak_in_flight),
        requests_refused_over_mailbox_limit=counters.get("graph.throttled.mailbox_concurrency", 0),
        concurrency_refusals=list(sandbox.state.concurrency_refusals),
        faults=dict(sandbox.state.injected),
        kills=fleet.kills,
        unexpected_exits=fleet.unexpected_exits,
        hung_at_stop=hung,
        answered_499=answered_499,
        postgres_restarts=postgres_restarts,
        grant_lost=revoked,
        grant_lost_state=revoked_state,
        token_refreshes=counters.get("identity.token.refresh_token", 0),
        timeline=fleet.timeline,
    )
