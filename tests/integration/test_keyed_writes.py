"""The queue's writes of jobs it names by their keys (a claim's lease on SQLite, lease renewals,
a hand-back, the provider's ids, a recovery) read those jobs by their keys, on both databases,
whatever the statistics: each ``UPDATE jobs`` they send is explained with its own parameters
and must not read an index led by the state (``models.keyed_state``).

On SQLite, without statistics (the daemon never gathers them), three ids or more made the
planner read every job in the state through ``jobs (state, run_after)``. On PostgreSQL,
statistics gathered while no job ran (or none was queued) count one where there are dozens,
and the custom plans did the same."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from mailbox_worker.jobs.queue import JobQueue
from mailbox_worker.jobs.transitions import Outcome
from mailbox_worker.states import JobState

from .conftest import Stores
from .test_queue import new_job, setup

LEASE = dt.timedelta(seconds=60)
STATE_LED = ("ix_jobs_state_run_after", "ix_jobs_mailbox_id_state_run_after", "ix_jobs_claim_order")
HISTORY = text(
    "WITH RECURSIVE numbers (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM numbers"
    " WHERE n < 3000)"
    " INSERT INTO jobs (id, account_id, mailbox_id, mode, state, request_sha256, message_id,"
    " attempts, transient_failures, run_after, created_at, updated_at, priority,"
    " recipient_count, claimed_at, finished_at)"
    " SELECT 'old' || n, account_id, mailbox_id, mode, 'sent', request_sha256, message_id,"
    " 1, 0, run_after, created_at, updated_at, 0, 1, claimed_at, finished_at"
    " FROM (SELECT * FROM jobs LIMIT 1) AS job, numbers"
)


@contextmanager
def keyed_updates(engine: AsyncEngine) -> Iterator[list[tuple[str, Any]]]:
    """Each ``UPDATE jobs`` sent while open, with its parameters as the driver got them."""
    sent: list[tuple[str, Any]] = []

    def record(_: Any, __: Any, statement: str, parameters: Any, *___: Any) -> None:
        if statement.lstrip().startswith("UPDATE jobs"):
            sent.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def plan_of(engine: AsyncEngine, statement: str, parameters: Any) -> str:
    """The plan of ``statement`` with its ``parameters``, as text (nothing is written)."""
    postgresql = engine.dialect.name == "postgresql"
    explain = "EXPLAIN " if postgresql else "EXPLAIN QUERY PLAN "
    async with engine.connect() as connection:
        rows = (await connection.exec_driver_sql(explain + statement, parameters)).all()
        await connection.rollback()
    return "\n".join(str(row[-1]) for row in rows)


async def test_the_writes_of_jobs_named_by_key_read_them_by_key(stores: Stores) -> None:
    mailbox = await setup(stores)
    await stores.jobs.enqueue(new_job(mailbox, key="first"))
    (only,) = await stores.queue.claim("w0", 1, LEASE)
    assert await stores.queue.finish(only.lease, Outcome(JobState.SENT))
    async with stores.engine.begin() as connection:
        await connection.execute(HISTORY)  # a database in use: its jobs sent long ago
    for number in range(12):
        await stores.jobs.enqueue(new_job(mailbox, key=f"k{number}"))
    if stores.engine.dialect.name == "postgresql":
        # statistics taken while none is running, as after a quiet hour
        async with stores.engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("VACUUM ANALYZE jobs"))
    # No mailbox limit stands in the way: the lease names several jobs.
    async with stores.engine.begin() as connection:
        await connection.execute(text("UPDATE mailboxes SET max_concurrency = 100"))

    with keyed_updates(stores.engine) as sent:
        leases = [item.lease for item in await stores.queue.claim("w1", 12, LEASE)]
        assert len(leases) == 12
        assert await stores.queue.renew_leases(leases, LEASE) == 12
        assert await stores.queue.hand_back(leases[:4]) == 4
        assert await stores.queue.start_attempt(leases[4])
        delivered = Outcome(JobState.SENT, provider_message_id="m-5")
        assert await stores.queue.record_provider_ids(leases[4], delivered)
        later = JobQueue(stores.sessions, clock=lambda: dt.datetime.now(dt.UTC) + 2 * LEASE)
        assert await later.recover_expired_leases() != (0, 0)

    assert len(sent) >= 4  # the renewal, the hand-back, the provider's ids, the recovery
    for statement, parameters in sent:
        plan = await plan_of(stores.engine, statement, parameters)
        assert not any(index in plan for index in STATE_LED), (statement, plan)
