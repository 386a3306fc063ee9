"""(PostgreSQL) the claim as ``mailbox_worker_claim_0020``: it locks mailboxes one at a time,
until they can fill the claim, instead of up to the claim's limit of them at once

Migration 0019's function, with its first statement (the one that locks the mailboxes)
replaced by a loop; the second statement (usage, deferrals, the lease) is unchanged.

Statement 1 locked, in one statement, up to ``p_limit`` mailboxes with due jobs: with a claim
of 100 and twenty busy mailboxes, the first claimer locked all twenty, and every claimer that
came while it held them found them locked (``SKIP LOCKED``), leased nothing and claimed again:
claims ran one at a time, and the empty ones spent the server's time too. Now the candidates
are read first, in the same turns between accounts, each with its room: its due jobs, below
its concurrency, and at most an equal part of the claim for each account with due jobs
(``limits.claim_room``). Then they are locked one at a time, each ``FOR NO KEY UPDATE SKIP
LOCKED`` (a mailbox another claimer holds is passed over), until the rooms of the locked ones
hold ``p_limit`` jobs or ``p_limit`` mailboxes are locked (``limits.mailboxes_to_lock``, which
the SQLite claim applies in Python). Claimers running at once take different mailboxes. With
the providers' default concurrency (4) the room of a mailbox is at most 4, so a claim of 100
still locks up to 25 mailboxes; a mailbox allowed more can fill more of the claim.

The function is also never compiled by PostgreSQL's JIT (``jit`` set off on it, as
``plan_cache_mode`` is, so on nothing else). With the tables analysed, as autovacuum keeps
them, the planner's estimate of statement 2 (a thousand rows assumed for the locked mailboxes'
array, each with its usage read) passes ``jit_above_cost``, and every claim compiled it: about
75 ms of a 100 ms claim of 80 jobs from 10,000 queued, measured with ``auto_explain``; a
drain of 10,000 jobs ran at a quarter of its speed on a never-analysed table (docs/
performance.md "Thirteenth pass"). The benchmarks and tests ran on tables too fresh to be
analysed, which is why it went unseen. JIT pays for long analytical queries, never for a
claim.

The lock also checks the mailbox again as it is locked (connected, not paused, its account
not paused): a mailbox disconnected or paused after the candidates were read is passed over.
Each mailbox costs what it did in 0019 (one probe of ``jobs (mailbox_id, state, run_after)``
for its oldest queued job, one count of its running ones); only a mailbox with a due job has
its due jobs counted, reading no more than its room of index entries.

The second statement starts after the last lock is taken, in a snapshot of its own, so it
still sees every claim committed by the worker that held a mailbox before
(docs/architecture.md#mailbox-limits). Measured in docs/performance.md "Thirteenth pass".

The release before calls ``mailbox_worker_claim_0019``, which stays; 0018's function, which
no supported release calls any more, is dropped (docs/deploy.md). SQLite has no function:
nothing to do there.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 09:20:00.000000
"""

from __future__ import annotations

from alembic import op

from mailbox_worker.db.migrations import load_version

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

NAME = "mailbox_worker_claim_0020"
_0019 = load_version("0019_claim_lookup_once.py")
_0018 = _0019._0018
QUEUED, RUNNING, CONNECTED = _0018.QUEUED, _0018.RUNNING, _0018.CONNECTED

_SETTINGS = "SET plan_cache_mode = force_generic_plan\n"
_SETTINGS_NOW = "SET plan_cache_mode = force_generic_plan\nSET jit = off\n"
_DECLARED = """\
    v_share integer;
BEGIN"""
_DECLARED_NOW = """\
    v_share integer;
    v_room integer := 0;
    v_candidate record;
    v_mailbox mailboxes;
BEGIN"""
_STATEMENT_1_START = (
    "    -- 1. Lock the mailboxes (and see the queue, for the worker's next wait).\n"
)
_STATEMENT_1_END = "    v_locked := coalesce(cardinality(v_mailboxes), 0);\n"
_CONCURRENCY = "coalesce(mb.max_concurrency, p_default_concurrency)"
STATEMENT_1 = f"""\
    -- 1. Lock the mailboxes one at a time, in turns between accounts, until their rooms hold
    --    the claim (and see the queue, for the worker's next wait).
    FOR v_candidate IN
        SELECT turns.id, turns.waiting,
               least(turns.due, turns.free,
                     (p_limit + turns.accounts - 1) / turns.accounts) AS room
        FROM (
            SELECT ranked.id, ranked.free, ranked.waiting, ranked.turn, ranked.oldest_due,
                   count(*) FILTER (WHERE ranked.turn = 1) OVER () AS accounts,
                   -- its due jobs, counted only for a mailbox that has one, up to its room
                   (SELECT count(*) FROM (SELECT 1 FROM jobs AS j
                                          WHERE j.mailbox_id = ranked.id
                                            AND j.state = '{QUEUED}'
                                            AND j.run_after <= p_now
                                          LIMIT least(p_limit, ranked.free)) AS due_jobs)
                       AS due
            FROM (
                SELECT waiting.id, waiting.free, waiting.oldest_due,
                       row_number() OVER (PARTITION BY waiting.account_id
                                          ORDER BY waiting.oldest_due, waiting.id) AS turn,
                       count(*) OVER () AS waiting
                FROM (
                    SELECT mb.id, mb.account_id,
                           (SELECT min(j.run_after) FROM jobs AS j
                            WHERE j.mailbox_id = mb.id AND j.state = '{QUEUED}') AS oldest_due,
                           {_CONCURRENCY} - (SELECT count(*) FROM jobs AS j
                                             WHERE j.mailbox_id = mb.id
                                               AND j.state = '{RUNNING}') AS free
                    FROM mailboxes AS mb
                    WHERE mb.state = '{CONNECTED}'
                      AND (mb.paused_until IS NULL OR mb.paused_until <= p_now)
                      AND NOT EXISTS (SELECT 1 FROM accounts AS a
                                      WHERE a.id = mb.account_id AND a.paused_at IS NOT NULL)
                    OFFSET 0  -- a plan of its own: each mailbox's jobs looked up once
                ) AS waiting
                WHERE waiting.oldest_due <= p_now AND waiting.free > 0
            ) AS ranked
        ) AS turns
        ORDER BY turns.turn, turns.oldest_due, turns.id
    LOOP
        v_waiting := v_candidate.waiting;
        EXIT WHEN v_room >= p_limit OR coalesce(cardinality(v_mailboxes), 0) >= p_limit;
        SELECT m.* INTO v_mailbox FROM mailboxes AS m
        WHERE m.id = v_candidate.id AND m.state = '{CONNECTED}'
          AND (m.paused_until IS NULL OR m.paused_until <= p_now)
          AND NOT EXISTS (SELECT 1 FROM accounts AS a
                          WHERE a.id = m.account_id AND a.paused_at IS NOT NULL)
        FOR NO KEY UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        v_mailboxes := array_append(v_mailboxes, v_mailbox);
        v_room := v_room + coalesce(v_candidate.room, 0);
    END LOOP;
    SELECT {_0018._DUE},
           (SELECT min(j.run_after) FROM jobs AS j
            WHERE j.state = '{QUEUED}' AND j.run_after > p_now)
    INTO v_due, v_next_due;

"""  # noqa: S608 - only constants of this module are interpolated


def _changed(create: str, old_name: str) -> str:
    """0019's ``CREATE FUNCTION`` as this migration's: its name, its settings, its variables
    and statement 1."""
    start, end = create.find(_STATEMENT_1_START), create.find(_STATEMENT_1_END)
    if (
        create.count(_DECLARED) != 1
        or create.count(_SETTINGS) != 1
        or create.count(f"{old_name}(") != 1
        or create.count(_STATEMENT_1_START) != 1
        or create.count(_STATEMENT_1_END) != 1
        or not 0 <= start < end
    ):
        raise RuntimeError("migration 0019's function is not the one 0020 changes")
    changed = create[:start] + STATEMENT_1 + create[end:]
    changed = changed.replace(f"{old_name}(", f"{NAME}(").replace(_DECLARED, _DECLARED_NOW)
    return changed.replace(_SETTINGS, _SETTINGS_NOW)


CREATE = _changed(_0019.CREATE, "mailbox_worker_claim_0019")
DROP = _0019.DROP.replace("mailbox_worker_claim_0019(", f"{NAME}(")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CREATE)
        op.execute(_0018.DROP)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_0018.CREATE)
        op.execute(DROP)
