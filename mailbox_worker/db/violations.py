"""Recording refused operations: a metric at once, an audit event soon after.

The Google operation gate (``providers/google_gate.py``) reports an attempt from wherever the
request was made — the event loop (the Gmail provider) or a worker thread (google-auth inside
``asyncio.to_thread``) — and must raise at once, so it cannot wait for the database.
``PolicyViolationLog.policy_violation`` counts the attempt through the telemetry port and
queues its audit event; the queue is written by a task on the event loop the log is bound to
(the first loop it is used from), and ``flush`` writes whatever is left (tests, shutdown).
An audit write that fails is logged and counted as a loop error; the metric stays.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque

from mailbox_worker.db.accounts import AccountStore
from mailbox_worker.telemetry import Telemetry

log = logging.getLogger(__name__)

ACTION = "policy.violation"


class PolicyViolationLog:
    """A ``providers.google_gate.ViolationReporter`` that counts and audits."""

    def __init__(self, accounts: AccountStore, telemetry: Telemetry) -> None:
        self._accounts = accounts
        self._telemetry = telemetry
        self._pending: deque[tuple[str, str]] = deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writers: set[asyncio.Task[None]] = set()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Write audit events on ``loop`` (the daemon's); done by the first call from a loop."""
        self._loop = loop

    def policy_violation(self, rule: str, attempted: str) -> None:
        """Count now; queue the audit event and have the bound loop write it."""
        self._telemetry.policy_violation(rule)
        log.error("policy violation (%s): %s refused", rule, attempted)
        with self._lock:
            self._pending.append((rule, attempted))
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and self._loop is None:
            self._loop = running
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # written by the next flush
        if running is loop:
            self._start_writer()
        else:
            loop.call_soon_threadsafe(self._start_writer)

    async def flush(self) -> None:
        """Write every queued audit event now (and wait for writers already started)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        if self._writers:
            await asyncio.gather(*self._writers, return_exceptions=True)
        await self._write_pending()

    def _start_writer(self) -> None:
        task = asyncio.ensure_future(self._write_pending())
        self._writers.add(task)
        task.add_done_callback(self._writers.discard)

    async def _write_pending(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    return
                rule, attempted = self._pending.popleft()
            try:
                await self._accounts.audit(
                    "daemon", None, ACTION, None, {"rule": rule, "attempted": attempted}
                )
            except Exception as error:  # the attempt was refused and counted; say so
                log.error("audit of a policy violation failed: %s", type(error).__name__)
                self._telemetry.loop_error("policy_audit")
