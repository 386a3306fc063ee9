"""Issue 8, item 7: the chaos soak. Thousands of jobs over many mailboxes while the sandbox
injects throttling, 503s, resets, slow answers and ambiguous faults, a mailbox loses its grant
(and gets it back), the daemon processes are SIGKILLed and restarted, and (on PostgreSQL) the
database restarts. At the end (docs/architecture.md, "Job states"): every job final, none lost,
no duplicate delivery among jobs not ``unknown``, every ``unknown`` explained (in flight at a kill
or hit by an ambiguous fault), running jobs per process within ``worker.concurrency``, and never
more than 4 concurrent Graph requests per mailbox across processes (a 5th refused while one of
the 4 slots was held for a request whose client had already hung up is the provider still
counting what the daemon gave up on, and is reported, not failed; each abandoned request
excuses one refusal only). The counts are printed
(``pytest -s`` shows them) and repeated in a failure's message.

Run: ``pytest -s -m soak tests/e2e/test_chaos_soak.py`` (PostgreSQL: the test starts a cluster
of its own from /usr/lib/postgresql/*/bin, see tests/postgres_cluster.py, so it can restart it).
The machinery is tests/e2e/chaos.py; the faults are the sandbox's chaos mode
(mailbox_worker/sandbox/controls.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from mailbox_worker.sandbox import Sandbox
from tests.postgres_cluster import PostgresCluster, postgres_cluster

from .chaos import SoakPlan, SoakReport, run_soak
from .conftest import Daemon, second_daemon

pytestmark = [pytest.mark.e2e, pytest.mark.soak]

SQLITE_PLAN = SoakPlan(
    jobs=1000,
    mailboxes=20,
    processes=1,
    kills_at=(0.3, 0.7),
    chaos_seconds=35,
    finish_within=110,
)
POSTGRES_PLAN = SoakPlan(
    jobs=2000,
    mailboxes=30,
    processes=2,
    kills_at=(0.12, 0.27, 0.85),
    postgres_restarts_at=(0.45,),
    chaos_seconds=50,
    finish_within=150,
)


def configure(daemon: Daemon, plan: SoakPlan, database_url: str) -> None:
    """The soak's settings: short leases and timeouts, quick retries."""
    daemon.environment.update(
        {
            "MAILBOX_WORKER_DATABASE__URL": database_url,
            # A load generator, not an invoicing app: one key enqueues and polls as fast as
            # it can. The API's rate limits are tested in test_api_rate_limits.py.
            "MAILBOX_WORKER_API__RATE_LIMIT_PER_SECOND": "0",
            "MAILBOX_WORKER_WORKER__CONCURRENCY": str(plan.concurrency),
            "MAILBOX_WORKER_WORKER__PER_MAILBOX_CONCURRENCY": str(plan.per_mailbox_concurrency),
            "MAILBOX_WORKER_WORKER__LEASE_SECONDS": str(plan.lease_seconds),
            "MAILBOX_WORKER_WORKER__POLL_INTERVAL": "0.2",
            "MAILBOX_WORKER_WORKER__RETRY_INITIAL": "0.5",
            "MAILBOX_WORKER_WORKER__RETRY_MAX": "3",
            "MAILBOX_WORKER_WORKER__SHUTDOWN_GRACE": "5",
            "MAILBOX_WORKER_MICROSOFT__REQUEST_TIMEOUT": str(plan.request_timeout),
            "MAILBOX_WORKER_LOGGING__LEVEL": "INFO",
        }
    )


def check(report: SoakReport) -> None:
    for line in report.lines():
        print(line)
    assert report.violations() == [], "\n".join(report.lines())


@pytest.mark.timeout(SQLITE_PLAN.finish_within + 90)
async def test_chaos_soak_sqlite_one_process(
    daemon: Daemon, sandbox: Sandbox, tmp_path: Path
) -> None:
    configure(daemon, SQLITE_PLAN, f"sqlite+aiosqlite:///{daemon.database}")
    report = await run_soak(
        SQLITE_PLAN, sandbox, [daemon], f"sqlite+aiosqlite:///{daemon.database}"
    )
    check(report)


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    with postgres_cluster() as started:
        yield started


@pytest.mark.postgres
@pytest.mark.timeout(POSTGRES_PLAN.finish_within + 90)
async def test_chaos_soak_postgres_two_processes(
    daemon: Daemon, sandbox: Sandbox, tmp_path: Path, cluster: PostgresCluster
) -> None:
    connection = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres")
    try:
        await connection.execute("CREATE DATABASE soak")
    finally:
        await connection.close()
    url = cluster.url("soak")
    configure(daemon, POSTGRES_PLAN, url)
    daemons = [daemon, second_daemon(daemon, tmp_path)]
    report = await run_soak(
        POSTGRES_PLAN, sandbox, daemons, url, lambda: cluster.restart(down_for=2.0)
    )
    check(report)
