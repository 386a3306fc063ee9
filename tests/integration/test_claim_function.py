"""PostgreSQL's claim is one call of ``mailbox_worker_claim_0023`` (migration 0023: 0022's
function comparing the states of a mailbox's own jobs as values, so that statistics of a
moment when no job had the state do not send those reads through every job in it; 0022's reads
the daily window's whole hours from ``mailbox_claim_hours``; 0021's finds its
candidates from the queued jobs; 0020's locks mailboxes one at a time until they can fill the
claim; 0019's looked each mailbox's oldest due job up once): one statement sent outside a
transaction, whose plans are generic inside it only, whose reads grow neither with the idle
mailboxes nor with the jobs a mailbox sent today, and two claims at once take different
mailboxes. What it claims, and the limits it keeps, are the queue's tests (``test_queue.py``,
``test_mailbox_limits.py``, ``test_claim_hours.py``), run on both databases."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from alembic import command
from sqlalchemy import Connection, TextClause, event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailbox_worker.clock import utcnow
from mailbox_worker.config import DatabaseSettings
from mailbox_worker.db import migrate
from mailbox_worker.db.engine import create_engine
from mailbox_worker.db.migrations import load_version
from mailbox_worker.jobs.claims import Claims
from mailbox_worker.jobs.limits import LimitDefaults
from mailbox_worker.jobs.transitions import Outcome
from mailbox_worker.states import JobState

from .conftest import Stores
from .test_queue import LEASE, new_job, setup
from .test_schema import insert_account_and_mailbox

DROPPED = {
    "0018": load_version("0018_claim_function.py"),
    "0019": load_version("0019_claim_lookup_once.py"),
    "0021": load_version("0021_claim_from_queued.py"),
}
"""The migrations whose functions a later one dropped (0018's and 0019's by 0020 and 0021,
0021's by 0023), made again by the tests that compare them with the newest."""
FUNCTION = text("SELECT count(*) FROM pg_proc WHERE proname = 'mailbox_worker_claim_0018'")
FUNCTIONS = text(
    "SELECT array_agg(proname ORDER BY proname) FROM pg_proc "
    "WHERE proname LIKE 'mailbox\\_worker\\_claim\\_%'"
)


# PostgreSQL only (SQLite's claim is its own path in Python, under BEGIN IMMEDIATE, and has
# no function): the shared fixtures' backend parameter is narrowed to PostgreSQL.
ON_POSTGRESQL = [pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture
def postgresql(stores: Stores) -> Stores:
    assert stores.engine.dialect.name == "postgresql"
    return stores


@pytest.fixture
async def empty_postgresql(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(DatabaseSettings(url=database_url))
    assert engine.dialect.name == "postgresql"
    yield engine
    await engine.dispose()


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Alembic's downgrade of ``engine``'s database to ``revision``."""

    def run(connection: Connection) -> None:
        config = migrate.alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(run)


@pytest.mark.parametrize("database_url", ON_POSTGRESQL, indirect=True)
async def test_migration_0018_creates_the_function_and_its_downgrade_drops_it(
    empty_postgresql: AsyncEngine,
) -> None:
    engine = empty_postgresql
    await migrate.upgrade(engine, "0017")
    async with engine.connect() as connection:
        assert await connection.scalar(FUNCTION) == 0
    await migrate.upgrade(engine, "0018")
    async with engine.connect() as connection:
        assert await connection.scalar(FUNCTION) == 1
    await downgrade(engine, "0017")
    async with engine.connect() as connection:
        assert await connection.scalar(FUNCTION) == 0


@pytest.mark.parametrize("database_url", ON_POSTGRESQL, indirect=True)
async def test_migration_0019_adds_its_function_beside_0018s_and_its_downgrade_drops_it(
    empty_postgresql: AsyncEngine,
) -> None:
    """The release before calls 0018's function during a deploy: 0019 keeps it."""
    engine = empty_postgresql
    await migrate.upgrade(engine, "0018")
    async with engine.connect() as connection:
        assert await connection.scalar(FUNCTIONS) == ["mailbox_worker_claim_0018"]
    await migrate.upgrade(engine, "0019")
    async with engine.connect() as connection:
        assert await connection.scalar(FUNCTIONS) == [
            "mailbox_worker_claim_0018",
            "mailbox_worker_claim_0019",
        ]
    await downgrade(engine, "0018")
    async with engine.connect() as connection:
        assert await connection.scalar(FUNCTIONS) == ["mailbox_worker_claim_0018"]


@pytest.mark.parametrize("database_url", ON_POSTGRESQL, indirect=True)
async def test_migration_0020_adds_its_function_drops_0018s_and_its_downgrade_undoes_both(
    empty_postgresql: AsyncEngine,
) -> None:
    """The release before calls 0019's function during a deploy: 0020 keeps it, and drops
    0018's, which no supported release calls (docs/deploy.md)."""
    engine = empty_postgresql
    await migrate.upgrade(engine, "0020")
    async with engine.connect() as connection:
        assert await connection.scalar(FUNCTIONS) == [
            "mailbox_worker_claim_0019",
            "mailbox_worker_claim_0020",
        ]
    await downgrade(engine, "0019")
    async with engine.connect() as connection:
        assert await connection.scalar(FUNCTIONS) == [
            "mailbox_worker_claim_0018",
            "mailbox_worker_claim_0019",
        ]


@pytest.mark.parametrize("database_url", ON_POSTGRESQL, indirect=True)
async def test_migration_0021_adds_its_function_and_index_drops_0019s_and_its_downgrade_undoes_them(
    empty_postgresql: AsyncEngine,
) -> None:
    """The release before calls 0020's function during a deploy: 0021 keeps it, and drops
    0019's, which only the release before that calls (docs/deploy.md)."""
    engine = empty_postgresql
    await migrate.upgrade(engine, "0021")
    async with engine.connect() as connection:
        assert await connection.scalar(FUNCTIONS) == [
            "mailbox_worker_claim_0020",
            "mailbox_worker_claim_0021",
        ]
        assert await connection.scalar(QUEUED_INDEX) == (
            "CREATE INDEX ix_jobs_queued ON public.jobs USING btree (mailbox_id, run_after)"
            " WHERE ((state)::text = 'queued'::text)"
        )
    await downgrade(engine, "0020")
    async with engine.connect() as connection:
        assert await connection.scalar(FUNCTIONS) == [
            "mailbox_worker_claim_0019",
            "mailbox_worker_claim_0020",
        ]
        assert await connection.scalar(QUEUED_INDEX) is None


@pytest.mark.parametrize("database_url", ON_POSTGRESQL, indirect=True)
async def test_migration_0022_counts_the_hours_claimed_and_its_downgrade_undoes_it(
    empty_postgresql: AsyncEngine,
) -> None:
    """0022 fills ``mailbox_claim_hours`` from the jobs claimed in the last two days and adds
    its function beside 0021's and 0020's: the release before 0021 and 0022 (released
    together) calls 0020's (docs/deploy.md). Its downgrade drops the function, the table, its
    triggers and their function."""
    engine = empty_postgresql
    await migrate.upgrade(engine, "0021")
    async with engine.begin() as connection:
        await insert_account_and_mailbox(connection, utcnow())
        await connection.execute(
            text(
                "INSERT INTO jobs (id, account_id, mailbox_id, mode, state, request_sha256,"
                " message_id, attempts, transient_failures, run_after, created_at, updated_at,"
                " priority, recipient_count, claimed_at)"
                " SELECT 'job_' || n, 'acc_1', 'mbx_1', 'send', 'sent', '', '', 1, 0, now(),"
                " now(), now(), 0, n, CAST(:hour AS timestamptz) + n * interval '1 minute'"
                " FROM generate_series(1, 3) AS n"
            ),
            {"hour": utcnow().replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=5)},
        )
    await migrate.upgrade(engine, "0022")
    async with engine.connect() as connection:
        assert await connection.scalar(FUNCTIONS) == [
            "mailbox_worker_claim_0020",
            "mailbox_worker_claim_0021",
            "mailbox_worker_claim_0022",
        ]
        counted = (await connection.execute(text("SELECT * FROM mailbox_claim_hours"))).all()
        assert [(row.mailbox_id, row.recipients) for row in counted] == [("mbx_1", 6)]
    await downgrade(engine, "0021")
    async with engine.connect() as connection:
        assert await connection.scalar(FUNCTIONS) == [
            "mailbox_worker_claim_0020",
            "mailbox_worker_claim_0021",
        ]
        assert await connection.scalar(text("SELECT to_regclass('mailbox_claim_hours')")) is None
        assert await connection.scalar(TRIGGERS) == 0


TRIGGERS = text("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'jobs\\_claim\\_hours%'")


@pytest.mark.parametrize("database_url", ON_POSTGRESQL, indirect=True)
async def test_migration_0023_adds_its_function_drops_0021s_and_its_downgrade_undoes_it(
    empty_postgresql: AsyncEngine,
) -> None:
    """The release before calls 0022's function, or 0020's (0021 and 0022 came together),
    which 0023 leaves in place; 0021's, which no release calls, goes (docs/deploy.md)."""
    engine = empty_postgresql
    await migrate.upgrade(engine, "0023")
    async with engine.connect() as connection:
        assert await connection.scalar(FUNCTIONS) == [
            "mailbox_worker_claim_0020",
            "mailbox_worker_claim_0022",
            "mailbox_worker_claim_0023",
        ]
    await downgrade(engine, "0022")
    async with engine.connect() as connection:
        assert await connection.scalar(FUNCTIONS) == [
            "mailbox_worker_claim_0020",
            "mailbox_worker_claim_0021",
            "mailbox_worker_claim_0022",
        ]


QUEUED_INDEX = text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_jobs_queued'")


async def made_again(connection: AsyncConnection, version: str) -> None:
    """The function of migration ``version``, if a later migration dropped it, made again in
    ``connection``'s transaction only (the caller rolls it back)."""
    if version in DROPPED:
        await connection.execute(text(DROPPED[version].CREATE))


SCANS = text(
    "SELECT pg_stat_get_xact_numscans(CAST('jobs' AS regclass)) + "
    "(SELECT sum(pg_stat_get_xact_numscans(indexrelid)) FROM pg_index "
    "WHERE indrelid = CAST('jobs' AS regclass))"
)
"""This transaction's scans of ``jobs``: of the table and of every index of it (which one a
lookup reads is the planner's choice, by the table's statistics)."""


NO_DEFAULTS = "CAST(ARRAY[] AS varchar[]), CAST(ARRAY[] AS integer[]), CAST(ARRAY[] AS integer[])"
EXCHANGE = "CAST(ARRAY['microsoft'] AS varchar[]), ARRAY[30], ARRAY[10000]"
"""The providers' defaults: none, or Exchange's rate (30 a minute) and daily cap (10,000)."""


def call(version: str, defaults: str = NO_DEFAULTS) -> TextClause:
    """A claim by the function of migration ``version``, concurrency 4 and the providers'
    ``defaults`` (none: no rate nor cap), under the lease ``o1``: the claimed jobs' ids (one
    NULL row when it claimed none)."""
    return text(
        f"""SELECT (claim.claimed_job).id FROM mailbox_worker_claim_{version}(
            now(), 10, 4, {defaults}, now() - interval '1 minute', now() - interval '1 day',
            interval '1 minute', interval '1 day', 'o1', now() + interval '1 minute', now(),
            'w1') AS claim"""  # noqa: S608 - this test's constants only
    )


@pytest.mark.parametrize("migrated_database_url", ON_POSTGRESQL, indirect=True)
@pytest.mark.parametrize("analysed", [False, True], ids=["never-analysed", "analysed"])
async def test_each_mailboxs_oldest_due_job_is_looked_up_once_per_claim(
    postgresql: Stores, analysed: bool
) -> None:
    """0018's function looked each mailbox's oldest due job up twice (in the filter and in
    the output of its first statement), 0019's once: counted as this transaction's scans of
    ``jobs``, a claim by each function in a transaction of its own that is rolled back after,
    so that both claim from the same queue. The functions differ in nothing else, so 0018's
    claim scans once more per mailbox, whatever the plans (also with the table analysed)."""
    stores = postgresql
    account = await stores.accounts.create_account("acme")
    mailboxes = 3
    for number in range(mailboxes):
        mailbox = await stores.connected_mailbox(account.id, f"billing{number}@contoso.example")
        await stores.jobs.enqueue(new_job(mailbox))
    if analysed:  # the planner then chooses other plans (sequential scans, another index)
        async with stores.engine.begin() as connection:
            await connection.execute(text("ANALYZE jobs"))
    scans: dict[str, int] = {}
    for version in ("0018", "0019"):
        async with stores.engine.connect() as connection, connection.begin() as transaction:
            await made_again(connection, version)
            before = await connection.scalar(SCANS)
            claimed = (await connection.scalars(call(version))).all()
            assert len(claimed) == mailboxes and None not in claimed, version
            scans[version] = await connection.scalar(SCANS) - before
            await transaction.rollback()
    assert scans["0018"] - scans["0019"] == mailboxes


@pytest.mark.parametrize("migrated_database_url", ON_POSTGRESQL, indirect=True)
async def test_a_claim_is_one_statement_outside_a_transaction(postgresql: Stores) -> None:
    stores = postgresql
    mailbox = await setup(stores)
    job, _ = await stores.jobs.enqueue(new_job(mailbox))
    sent: list[tuple[str, bool]] = []

    def record(connection: Any, cursor: Any, statement: str, *_: Any) -> None:
        # The server connection's own state once the statement ran: no transaction open.
        driver = connection.connection.driver_connection
        sent.append((statement, driver.is_in_transaction()))

    event.listen(stores.engine.sync_engine, "after_cursor_execute", record)
    try:
        claimed = await stores.queue.claim("w1", 4, LEASE)
    finally:
        event.remove(stores.engine.sync_engine, "after_cursor_execute", record)
    assert [each.job.id for each in claimed] == [job.id]
    assert claimed[0].mailbox.id == mailbox.id
    assert claimed[0].payload == new_job(mailbox).payload
    assert len(sent) == 1
    statement, in_transaction = sent[0]
    assert "mailbox_worker_claim_0023(" in statement
    assert not in_transaction
    async with stores.engine.connect() as connection:
        state = await connection.scalar(
            text("SELECT state FROM jobs WHERE id = :id"), {"id": job.id}
        )
    assert state == "running"  # committed by the statement's own transaction


@pytest.mark.parametrize("migrated_database_url", ON_POSTGRESQL, indirect=True)
async def test_the_functions_plans_are_generic_and_nothing_else_is_changed(
    postgresql: Stores,
) -> None:
    """``plan_cache_mode`` and ``jit`` are the function's own settings: set while it runs, as
    they were after;
    the claim's commit waits for the flush like any other (a claim the server forgot after a
    draft was made would leave that draft behind)."""
    stores = postgresql
    mailbox = await setup(stores)
    await stores.jobs.enqueue(new_job(mailbox))
    claims = Claims(LimitDefaults(), utcnow)
    async with stores.engine.connect() as connection:
        settings = await connection.scalar(
            text("SELECT proconfig FROM pg_proc WHERE proname = 'mailbox_worker_claim_0023'")
        )
        assert settings == ["plan_cache_mode=force_generic_plan", "jit=off"]
        default_commit = await connection.scalar(text("SHOW synchronous_commit"))
        default_plans = await connection.scalar(text("SHOW plan_cache_mode"))
        default_jit = await connection.scalar(text("SHOW jit"))
        await connection.commit()
        async with connection.begin():
            batch = await claims.claim_postgresql(connection, "w1", 4, LEASE, utcnow())
            assert len(batch.jobs) == 1
            assert await connection.scalar(text("SHOW plan_cache_mode")) == default_plans
            assert await connection.scalar(text("SHOW jit")) == default_jit
            assert await connection.scalar(text("SHOW synchronous_commit")) == default_commit


@pytest.mark.parametrize("migrated_database_url", ON_POSTGRESQL, indirect=True)
async def test_a_claim_with_nothing_due_reports_the_next_due_time(postgresql: Stores) -> None:
    """No mailbox locked: one row with the counts only (``ClaimBatch``)."""
    stores = postgresql
    mailbox = await setup(stores)
    later = utcnow() + dt.timedelta(hours=1)
    await stores.jobs.enqueue(new_job(mailbox))
    async with stores.engine.begin() as connection:
        await connection.execute(text("UPDATE jobs SET run_after = :later"), {"later": later})
    batch = await stores.queue.claim_batch("w1", 4, LEASE)
    assert batch.jobs == [] and not batch.more and not batch.due_left
    assert batch.next_due is not None
    assert abs((batch.next_due - later).total_seconds()) < 0.001


UNLOCKED = text(
    "SELECT array_agg(id ORDER BY id) FROM "
    "(SELECT id FROM mailboxes FOR NO KEY UPDATE SKIP LOCKED) AS unlocked"
)
"""The mailboxes no other transaction holds (taken and let go with this one's end)."""


@pytest.mark.parametrize("migrated_database_url", ON_POSTGRESQL, indirect=True)
async def test_two_claims_at_once_take_different_mailboxes(postgresql: Stores) -> None:
    """A claim locks mailboxes only until they can fill it (migration 0020), so a claim made
    while another is still open takes the next mailbox instead of finding every one locked
    (0019's, which locked up to its limit of them at once, leased nothing here). The first
    claim is held open by calling the function inside a transaction, as a claim in progress
    would hold its locks."""
    stores = postgresql
    account = await stores.accounts.create_account("acme")
    mailboxes = []
    for number in range(3):
        mailbox = await stores.connected_mailbox(account.id, f"billing{number}@contoso.example")
        mailboxes.append(mailbox)
        for job in range(10):
            await stores.jobs.enqueue(new_job(mailbox, subject=f"Invoice {number}.{job}"))
    async with stores.engine.begin() as connection:  # each may run 20: room for the claim
        await connection.execute(text("UPDATE mailboxes SET max_concurrency = 20"))
    claims = Claims(LimitDefaults(), utcnow)
    async with stores.engine.connect() as first, first.begin():
        held = await claims.claim_postgresql(first, "w1", 10, LEASE, utcnow())
        assert {item.mailbox.id for item in held.jobs} == {mailboxes[0].id}
        assert (len(held.jobs), held.more) == (10, True)
        async with stores.engine.connect() as other:
            async with other.begin():
                unlocked = await other.scalar(UNLOCKED)
            assert unlocked == sorted(mailbox.id for mailbox in mailboxes[1:])
            second = await claims.claim_postgresql(other, "w2", 10, LEASE, utcnow())
            assert {item.mailbox.id for item in second.jobs} == {mailboxes[1].id}
            assert len(second.jobs) == 10


@pytest.mark.parametrize("migrated_database_url", ON_POSTGRESQL, indirect=True)
async def test_the_claim_is_never_compiled_by_the_jit(postgresql: Stores) -> None:
    """With the tables analysed, the planner's estimate of the claim's second statement passed
    ``jit_above_cost`` and PostgreSQL compiled it at every claim (about 75 ms of a 100 ms
    claim, migration 0020's docstring). Here every statement passes it (``jit_above_cost``
    0): 0019's function is compiled, 0023's (as 0020's to 0022's) is not. Seen through
    ``auto_explain``'s plans, sent to this connection as notices; each claim is rolled
    back."""
    stores = postgresql
    mailbox = await setup(stores)
    await stores.jobs.enqueue(new_job(mailbox))
    dsn = stores.engine.url.set(drivername="postgresql").render_as_string(False)
    connection = await asyncpg.connect(dsn)
    try:
        if not await connection.fetchval("SELECT pg_jit_available()"):
            pytest.skip("this PostgreSQL has no JIT provider: nothing is ever compiled")
        notices: list[str] = []
        connection.add_log_listener(lambda _, message: notices.append(str(message)))
        try:
            await connection.execute("LOAD 'auto_explain'")
        except asyncpg.PostgresError as error:  # the contrib module, loaded by a superuser
            pytest.skip(f"auto_explain cannot be loaded here: {error}")
        await connection.execute(
            "SET auto_explain.log_min_duration = 0;"
            " SET auto_explain.log_nested_statements = on; SET auto_explain.log_level = notice;"
            " SET jit_above_cost = 0; SET client_min_messages = notice"
        )
        compiled = {}
        for version in ("0019", "0023"):
            notices.clear()
            transaction = connection.transaction()
            await transaction.start()
            try:
                if version == "0019":  # dropped by 0021: made again in this transaction only
                    await connection.execute(DROPPED["0019"].CREATE)
                claimed = [row[0] for row in await connection.fetch(call(version).text)]
                assert len(claimed) == 1 and None not in claimed, version  # statement 2 ran
                await asyncio.sleep(0)  # asyncpg hands the notices over with call_soon
            finally:
                await transaction.rollback()
            assert notices, version  # auto_explain did report the claim's plans
            # The call's own statement is this session's (compiled at a cost of 0: the
            # function's settings apply inside it); the function's statements are the rest.
            inside = [
                notice for notice in notices if "Function Scan on mailbox_worker" not in notice
            ]
            assert inside, version
            compiled[version] = any("JIT:" in notice for notice in inside)
    finally:
        await connection.close()
    assert compiled == {"0019": True, "0023": False}


@pytest.mark.parametrize("migrated_database_url", ON_POSTGRESQL, indirect=True)
@pytest.mark.parametrize("analysed", [False, True], ids=["never-analysed", "analysed"])
async def test_a_claims_reads_do_not_grow_with_the_idle_mailboxes(
    postgresql: Stores, analysed: bool
) -> None:
    """0020's claim looked up every connected mailbox, idle or not (about 2 us each: 20 ms a
    claim at 10,000); 0021's finds the mailboxes with queued jobs from ``ix_jobs_queued`` and
    looks up only those. Counted as this transaction's scans of ``jobs`` (of the table and of
    its indexes), a claim of the one due job by each function, in a transaction rolled back
    after, with 3 and then 33 idle connected mailboxes, each with a job sent long ago (also
    with the tables analysed, when the planner may choose other plans)."""
    stores = postgresql
    account = await stores.accounts.create_account("acme")
    busy = await stores.connected_mailbox(account.id, "busy@contoso.example")
    await stores.jobs.enqueue(new_job(busy))
    scans: dict[tuple[str, int], int] = {}
    idle = 0
    for wanted in (3, 33):
        while idle < wanted:
            mailbox = await stores.connected_mailbox(account.id, f"idle{idle}@contoso.example")
            await stores.jobs.enqueue(new_job(mailbox, subject=f"sent {idle}"))
            idle += 1
        async with stores.engine.begin() as connection:
            await connection.execute(
                text("UPDATE jobs SET state = 'sent' WHERE mailbox_id <> :busy"),
                {"busy": busy.id},
            )
            if analysed:
                await connection.execute(text("ANALYZE jobs, mailboxes"))
        for version in ("0020", "0021"):
            async with stores.engine.connect() as connection, connection.begin() as transaction:
                await made_again(connection, version)
                before = await connection.scalar(SCANS)
                claimed = (await connection.scalars(call(version))).all()
                assert len(claimed) == 1 and None not in claimed, version
                scans[version, idle] = await connection.scalar(SCANS) - before
                await transaction.rollback()
    assert scans["0021", 33] == scans["0021", 3]
    assert scans["0020", 33] - scans["0020", 3] >= 2 * 30  # two probes per idle mailbox


READS = text(
    "SELECT pg_stat_get_xact_tuples_fetched(CAST('jobs' AS regclass)) + "
    "(SELECT sum(pg_stat_get_xact_tuples_returned(indexrelid)) FROM pg_index "
    "WHERE indrelid = CAST('jobs' AS regclass))"
)
"""This transaction's rows of ``jobs`` read: heap rows fetched, and index entries returned
by every index of it."""


@pytest.mark.parametrize("migrated_database_url", ON_POSTGRESQL, indirect=True)
async def test_a_claims_reads_do_not_grow_with_the_jobs_a_mailbox_sent_today(
    postgresql: Stores,
) -> None:
    """0021's claim read every job a mailbox it locked had claimed in the last day, for the
    daily cap; 0022's reads the whole hours from ``mailbox_claim_hours`` and only the jobs of
    the hour the window starts in. Counted as this transaction's rows of ``jobs`` read, a claim
    of the one due job by each function, rolled back after, with 20 and then 200 jobs sent two
    hours ago by the same mailbox (inside the window, not in its first hour). The mailbox also
    has 5,000 jobs sent three days ago and the tables are analysed, as in a database in use:
    on a table of a few hundred rows the planner reads all of a mailbox's jobs whatever the
    query."""
    stores = postgresql
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id, "busy@contoso.example")
    due, _ = await stores.jobs.enqueue(new_job(mailbox))
    copies = text(
        "INSERT INTO jobs (id, account_id, mailbox_id, mode, state, request_sha256, message_id,"
        " attempts, transient_failures, run_after, created_at, updated_at, priority,"
        " recipient_count, claimed_at)"
        " SELECT :prefix || n, account_id, mailbox_id, mode, 'sent', request_sha256,"
        " message_id, 1, 0, run_after, created_at, updated_at, 0, 1,"
        " now() - CAST(:ago AS interval)"
        " FROM jobs, generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS n"
        " WHERE id = :due"
    )
    async with stores.engine.begin() as connection:
        await connection.execute(
            copies,
            {"prefix": "old", "first": 1, "last": 5000, "ago": dt.timedelta(days=3), "due": due.id},
        )
    reads: dict[tuple[str, int], int] = {}
    sent = 0
    for wanted in (20, 200):
        async with stores.engine.begin() as connection:
            await connection.execute(
                copies,
                {
                    "prefix": "today",
                    "first": sent + 1,
                    "last": wanted,
                    "ago": dt.timedelta(hours=2),
                    "due": due.id,
                },
            )
        sent = wanted
        for version in ("0021", "0022"):
            # statistics, and no index entries left by the claims rolled back before (with
            # so few, vacuum would leave the indexes alone unless told)
            async with stores.engine.connect() as connection:
                autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                await autocommit.execute(
                    text("VACUUM (INDEX_CLEANUP ON, ANALYZE) jobs, mailbox_claim_hours")
                )
            async with stores.engine.connect() as connection, connection.begin() as transaction:
                await made_again(connection, version)
                before = await connection.scalar(READS)
                # with a daily cap, as the providers' defaults always set one
                claimed = (await connection.scalars(call(version, EXCHANGE))).all()
                assert claimed == [due.id], version
                reads[version, sent] = await connection.scalar(READS) - before
                await transaction.rollback()
    assert reads["0022", 200] == reads["0022", 20]
    assert reads["0021", 200] - reads["0021", 20] >= 180


COPIES = text(
    "WITH made AS (INSERT INTO jobs (id, account_id, mailbox_id, mode, state,"
    " request_sha256, message_id, attempts, transient_failures, run_after, created_at,"
    " updated_at, priority, recipient_count)"
    " SELECT :prefix || n, account_id, mailbox_id, mode, :state, request_sha256,"
    " message_id, 0, 0, now() - interval '1 minute', now(), now(), 0, 1"
    " FROM jobs, generate_series(1, CAST(:count AS integer)) AS n WHERE id = :first"
    " RETURNING id)"
    " INSERT INTO job_contents (job_id, payload)"
    " SELECT made.id, content.payload FROM made, job_contents AS content"
    " WHERE content.job_id = :first"
)
"""``count`` copies of the job ``first`` in ``state``, with its content, their ids starting
``prefix``."""


@pytest.mark.parametrize("migrated_database_url", ON_POSTGRESQL, indirect=True)
async def test_a_claim_leases_its_jobs_by_key_whatever_the_backlog(postgresql: Stores) -> None:
    """With the statistics taken while no job was queued, then 2,000 queued: the next jobs of
    a mailbox, compared as any state, are estimated as a share of the table, and a lease that
    compared the state as a constant joined them to every queued job (2,000 rows read for a
    claim of 4). Counted as this transaction's rows of ``jobs`` read by a claim of 0023's,
    rolled back after."""
    stores = postgresql
    mailbox = await setup(stores)
    first, _ = await stores.jobs.enqueue(new_job(mailbox))
    (only,) = await stores.queue.claim("w0", 1, LEASE)
    assert await stores.queue.finish(only.lease, Outcome(JobState.SENT))
    async with stores.engine.begin() as connection:
        await connection.execute(
            COPIES, {"prefix": "old", "state": "sent", "count": 5000, "first": first.id}
        )
    async with stores.engine.connect() as connection:  # none is queued yet
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("VACUUM ANALYZE jobs"))
    async with stores.engine.begin() as connection:
        await connection.execute(
            COPIES, {"prefix": "new", "state": "queued", "count": 2000, "first": first.id}
        )
    async with stores.engine.connect() as connection, connection.begin() as transaction:
        before = await connection.scalar(READS)
        claimed = (await connection.scalars(call("0023"))).all()
        read = await connection.scalar(READS) - before
        await transaction.rollback()
    assert len(claimed) == 4 and None not in claimed
    assert read < 200, read
