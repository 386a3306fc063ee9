"""the claim's candidates found from the queued jobs, not from every connected mailbox: the
partial index ``ix_jobs_queued`` and (PostgreSQL) the claim as ``mailbox_worker_claim_0021``

Every claim up to 0020 looked up each connected mailbox, with a due job or not: two index
probes of ``jobs`` per mailbox, about 2 us each, so a claim took about 20 ms at 10,000
connected mailboxes and every invoice sent to an idle worker waited that long
(docs/performance.md "Thirteenth pass" and "Fourteenth pass"). A deployment grows by its
customers' mailboxes, most of them idle at any moment.

Now the candidates come from the queued jobs. ``ix_jobs_queued``, on ``jobs (mailbox_id,
run_after)`` for queued jobs only, lists each mailbox with queued jobs once per job, its
oldest first; a skip scan (a recursive query, one probe per mailbox: the first entry after
the last mailbox found) reads each such mailbox and its oldest queued job, and only those
mailboxes are then looked up, by key: connected, not paused, of an unpaused account, below
their concurrency. The rules, the turns between accounts, the rooms, the locks one at a time
and statement 2 are 0020's, unchanged (its docstring has them); a claim costs the mailboxes
with queued jobs, not the connected ones.

The index holds queued jobs only: a job enters it when it is queued and its later versions
(running, sent) do not, so it adds one entry per enqueue (and per retry) to the writes of the
queue, and none to a claim's or a completion's. Its predicate names the state as a constant,
as every query that reads it does (a bound parameter could not prove it holds). SQLite has the
same index; its claim reads the same way (``jobs/claims.py``).

Building it reads the whole ``jobs`` table under a lock that lets reads through but holds
enqueues, claims and completions until it is built: measured in docs/deploy.md.

The function is 0020's text with the name and statement 1's candidate query changed
(``_changed``, which fails rather than create anything else if 0020's text no longer holds
it; ``tests/unit/test_claim_migrations.py`` holds the result to the text released). 0020's
function stays for the release before; 0019's, which only the release before 0020 calls, is
dropped (docs/deploy.md).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 12:10:00.000000
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

from mailbox_worker.db.migrations import lines_of, load_version

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

NAME = "mailbox_worker_claim_0021"
INDEX = "ix_jobs_queued"
_0020 = load_version("0020_claim_in_turn.py")
_0019, _0018 = _0020._0019, _0020._0018
QUEUED, RUNNING, CONNECTED = _0018.QUEUED, _0018.RUNNING, _0018.CONNECTED

# Each part of 0020's text this replaces (taken from it), then what replaces it: statement
# 1's comment and the start of its candidates query, and how the candidates are read.
_COMMENT = lines_of(
    _0020.CREATE,
    "    -- 1. Lock the mailboxes one at a time, in turns between accounts, until their rooms hold",
    "    FOR v_candidate IN",
)
_COMMENT_NOW = f"""\
    -- 1. Lock the mailboxes one at a time, in turns between accounts, until their rooms hold
    --    the claim (and see the queue, for the worker's next wait). The candidates are the
    --    mailboxes with queued jobs, found by a skip scan of {INDEX} (one probe each), each
    --    with its oldest queued job's run_after.
    FOR v_candidate IN
        WITH RECURSIVE queued (mailbox_id, oldest_due) AS (
            (SELECT j.mailbox_id, j.run_after FROM jobs AS j
             WHERE j.state = '{QUEUED}'
             ORDER BY j.mailbox_id, j.run_after LIMIT 1)
            UNION ALL
            SELECT next.mailbox_id, next.run_after
            FROM queued CROSS JOIN LATERAL (
                SELECT j.mailbox_id, j.run_after FROM jobs AS j
                WHERE j.state = '{QUEUED}' AND j.mailbox_id > queued.mailbox_id
                ORDER BY j.mailbox_id, j.run_after LIMIT 1
            ) AS next
        )
"""  # noqa: S608 - only constants of this module are interpolated
_WAITING = lines_of(_0020.CREATE, "                FROM (", "                ) AS waiting")
_WAITING_NOW = f"""\
                FROM (
                    SELECT mb.id, mb.account_id, queued.oldest_due, mb.free
                    FROM queued CROSS JOIN LATERAL (
                        SELECT mb.id, mb.account_id,
                               {_0020._CONCURRENCY} - (SELECT count(*) FROM jobs AS j
                                                 WHERE j.mailbox_id = mb.id
                                                   AND j.state = '{RUNNING}') AS free
                        FROM mailboxes AS mb
                        WHERE mb.id = queued.mailbox_id AND mb.state = '{CONNECTED}'
                          AND (mb.paused_until IS NULL OR mb.paused_until <= p_now)
                          AND NOT EXISTS (SELECT 1 FROM accounts AS a
                                          WHERE a.id = mb.account_id
                                            AND a.paused_at IS NOT NULL)
                        OFFSET 0  -- by key, per mailbox found: never a join of every mailbox
                    ) AS mb
                    WHERE queued.oldest_due <= p_now
                ) AS waiting
"""  # noqa: S608 - only constants of this module are interpolated


def _changed(create: str, old_name: str) -> str:
    """0020's ``CREATE FUNCTION`` as this migration's: its name and statement 1's
    candidates."""
    if (
        create.count(f"{old_name}(") != 1
        or create.count(_COMMENT) != 1
        or create.count(_WAITING) != 1
    ):
        raise RuntimeError("migration 0020's function is not the one 0021 changes")
    changed = create.replace(f"{old_name}(", f"{NAME}(")
    return changed.replace(_COMMENT, _COMMENT_NOW).replace(_WAITING, _WAITING_NOW)


CREATE = _changed(_0020.CREATE, "mailbox_worker_claim_0020")
DROP = _0020.DROP.replace("mailbox_worker_claim_0020(", f"{NAME}(")


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            INDEX,
            ["mailbox_id", "run_after"],
            unique=False,
            postgresql_where=text(f"state = '{QUEUED}'"),
            sqlite_where=text(f"state = '{QUEUED}'"),
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CREATE)
        op.execute(_0019.DROP)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_0019.CREATE)
        op.execute(DROP)
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(INDEX)
