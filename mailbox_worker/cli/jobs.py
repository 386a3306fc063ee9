"""``mailbox-worker jobs``: the operator's view of the queue, and the actions on one job.

``list``, ``show`` and ``stats`` show metadata only — ids, states, attempts, stable error codes
and times — never a message, a recipient or a token (docs/privacy.md PP-3: content is the
customer's). ``show --content`` shows the message only under the account's support-access
grant, and audits it (``cli/support.py``). ``resolve``, ``retry`` and ``cancel`` settle an
``unknown`` job; ``cancel`` also cancels a ``queued`` or ``held`` one. Every action is
audited as ``cli``.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from mailbox_worker.app import App
from mailbox_worker.cli.output import OK, USAGE, emit_json, emit_rows, refuse
from mailbox_worker.cli.support import show_job_content
from mailbox_worker.db.models import Job, JobEvent
from mailbox_worker.jobs.store import JobFilter
from mailbox_worker.jobs.transitions import SETTLEMENTS
from mailbox_worker.states import CANCELLABLE, JobState

ACTIONS = ("list", "show", "stats", "resolve", "retry", "cancel")
LIST_COLUMNS = (
    "id",
    "account_id",
    "mailbox_id",
    "mode",
    "state",
    "attempts",
    "last_error_code",
    "created_at",
    "updated_at",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("--id", help="job id (show, resolve, retry, cancel)")
    parser.add_argument("--account", help="only this account's jobs (list)")
    parser.add_argument("--mailbox", help="only this mailbox's jobs (list)")
    parser.add_argument("--state", choices=[str(state) for state in JobState], help="(list)")
    parser.add_argument("--reference", help="the invoicing app's reference (list)")
    parser.add_argument("--limit", type=int, default=50, help="most jobs listed (default 50)")
    parser.add_argument(
        "--accept-duplicate-risk",
        action="store_true",
        help="retry: accept that the message may be delivered twice (required)",
    )
    parser.add_argument(
        "--content",
        action="store_true",
        help="show: the message itself; only under the account's support-access grant, audited",
    )
    parser.add_argument("--json", action="store_true", help="answer in JSON")


async def run(app: App, args: argparse.Namespace) -> int:
    """Carry out ``args.action``; returns the exit status (``cli/output.py``)."""
    actions: dict[str, Callable[[App, argparse.Namespace], Awaitable[int]]] = {
        "list": _list,
        "show": _show,
        "stats": _stats,
        "resolve": _settle,
        "retry": _settle,
        "cancel": _cancel,
    }
    if args.action not in ("list", "stats") and not args.id:
        return refuse(f"jobs {args.action} needs --id", USAGE)
    return await actions[args.action](app, args)


def check_arguments(args: argparse.Namespace) -> int | None:
    """A refusal that needs no database (``retry`` without accepting the risk), else None."""
    if args.action == "retry" and not args.accept_duplicate_risk:
        return refuse(
            "jobs retry needs --accept-duplicate-risk: the first attempt may have reached "
            "the provider, so the message may be delivered twice",
            USAGE,
        )
    if args.limit < 1:
        return refuse("--limit must be at least 1", USAGE)
    return None


async def _list(app: App, args: argparse.Namespace) -> int:
    wanted = JobFilter(args.account, args.mailbox, args.state, args.reference)
    jobs = await app.jobs.find(wanted, args.limit)
    emit_rows([job_row(job) for job in jobs], LIST_COLUMNS, args.json)
    return OK


async def _show(app: App, args: argparse.Namespace) -> int:
    if args.content:
        return await show_job_content(app, args.id)
    job = await app.jobs.get(args.id)
    if job is None:
        return refuse(f"no job {args.id}")
    events = [event_row(event) for event in await app.jobs.events(job.id)]
    if args.json:
        emit_json(job_row(job) | {"events": events})
        return OK
    for name, value in job_row(job).items():
        print(f"{name}\t{'-' if value is None else value}")
    print()
    emit_rows(events, ("at", "kind", "from_state", "to_state", "code", "worker"), as_json=False)
    return OK


async def _stats(app: App, args: argparse.Namespace) -> int:
    counts = await app.queue.count_by_state()
    oldest = await app.jobs.oldest_due()
    age = None if oldest is None else round((datetime.now(UTC) - oldest).total_seconds(), 1)
    if args.json:
        emit_json({"jobs_by_state": counts, "oldest_due_queued_seconds": age})
        return OK
    emit_rows(
        [{"state": state, "jobs": count} for state, count in counts.items()],
        ("state", "jobs"),
        False,
    )
    print(f"oldest due queued job waiting: {'-' if age is None else f'{age} s'}")
    return OK


async def _settle(app: App, args: argparse.Namespace) -> int:
    settled = await app.jobs.settle_unknown(args.id, SETTLEMENTS[args.action], "cli")
    if settled is None:
        return refuse(f"no job {args.id}")
    job, moved = settled
    if not moved:
        return refuse(f"job {job.id} is {job.state}, not unknown")
    _print_moved(job.id, job.state, args.json)
    return OK


async def _cancel(app: App, args: argparse.Namespace) -> int:
    job = await app.jobs.get(args.id)
    if job is None:
        return refuse(f"no job {args.id}")
    if job.state == JobState.UNKNOWN:
        return await _settle(app, args)
    if job.state not in CANCELLABLE:
        return refuse(f"job {job.id} is {job.state}: only queued, held or unknown jobs cancel")
    cancelled = await app.jobs.cancel(job.id, job.account_id, actor="cli")
    if cancelled is None or cancelled.state != JobState.CANCELLED:
        state = "gone" if cancelled is None else cancelled.state
        return refuse(f"job {job.id} is {state}: it moved before it could be cancelled")
    _print_moved(cancelled.id, cancelled.state, args.json)
    return OK


def _print_moved(job_id: str, state: str, as_json: bool) -> None:
    if as_json:
        emit_json({"id": job_id, "state": state})
    else:
        print(f"{job_id} {state}")


def job_row(job: Job) -> dict[str, Any]:
    """A job's metadata: what an operator may see without a support grant."""
    return {
        "id": job.id,
        "account_id": job.account_id,
        "mailbox_id": job.mailbox_id,
        "mode": job.mode,
        "state": job.state,
        "reference": job.reference,
        "attempts": job.attempts,
        "priority": job.priority,
        "last_error_code": job.last_error_code,
        "created_at": _when(job.created_at),
        "updated_at": _when(job.updated_at),
        "send_at": _when(job.send_at),
        "deadline": _when(job.deadline),
        "finished_at": _when(job.finished_at),
    }


def event_row(event: JobEvent) -> dict[str, Any]:
    return {
        "at": _when(event.at),
        "kind": event.kind,
        "from_state": event.from_state,
        "to_state": event.to_state,
        "code": event.code,
        "worker": event.worker,
    }


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
