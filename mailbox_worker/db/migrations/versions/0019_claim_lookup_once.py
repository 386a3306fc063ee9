"""(PostgreSQL) the claim as ``mailbox_worker_claim_0019``: each mailbox's oldest due job looked
up once per claim, not twice

Migration 0018's function, with one change in its first statement (the one that locks the
mailboxes). Its subquery ``waiting`` computes, for every connected mailbox, when the mailbox's
oldest queued job became due (``oldest_due``), and the query around it keeps the mailboxes
where that is past. PostgreSQL flattened the subquery into the query around it and put the
sub-select in both places, the filter and the output, so each mailbox's lookup ran twice.
``OFFSET 0`` keeps the subquery a plan of its own, whose output the filter reads: one lookup
per mailbox.

The lookup is dearer than it looks while the queue is busy. The index it reads,
``jobs (mailbox_id, state, run_after)``, holds an entry for the ``queued`` version of each
claimed job until vacuum removes it or a scan marks it dead, and those come first in its order
(the oldest due are claimed first): a lookup steps over them to the first live one. In
``bench/queue_throughput.py``'s drain (10,000 jobs, 20 mailboxes, four claimers) they were not
marked, and a lookup read more buffers with every claim, about 100 by the drain's end.
Measured with ``pg_stat_statements`` in alternated runs, a claim read 4,500 to 5,100 buffers
instead of 6,300 to 7,000 and took 5.0 to 5.7 ms of the server's time instead of 5.9 to 6.7;
the drain itself was faster in 5 pairs of 7, by 3.6 % on average, within this machine's spread
(docs/performance.md "Eleventh pass").
Nothing else differs: the same rules, results and settings (its plans generic).

The function is 0018's text with the name and that one clause changed (``_changed``, which
fails rather than create anything else if 0018's text no longer holds the clause;
``tests/unit/test_claim_migrations.py`` holds the result to the text released). 0018's
function stays for the release before, which calls it during a deploy; the next migration that
changes the claim drops it (docs/deploy.md). SQLite has no function: nothing to do there.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 05:10:00.000000
"""

from __future__ import annotations

from alembic import op

from mailbox_worker.db.migrations import load_version

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

NAME = "mailbox_worker_claim_0019"
_SUBQUERY_END = """\
                  AND NOT EXISTS (SELECT 1 FROM accounts AS a
                                  WHERE a.id = mb.account_id AND a.paused_at IS NOT NULL)
            ) AS waiting"""
_SUBQUERY_END_KEPT = """\
                  AND NOT EXISTS (SELECT 1 FROM accounts AS a
                                  WHERE a.id = mb.account_id AND a.paused_at IS NOT NULL)
                OFFSET 0  -- a plan of its own: oldest_due looked up once per mailbox
            ) AS waiting"""


def _changed(create: str, old_name: str) -> str:
    """0018's ``CREATE FUNCTION`` as this migration's: its name and the subquery's end."""
    if create.count(_SUBQUERY_END) != 1 or create.count(f"{old_name}(") != 1:
        raise RuntimeError("migration 0018's function is not the one 0019 changes")
    return create.replace(f"{old_name}(", f"{NAME}(").replace(_SUBQUERY_END, _SUBQUERY_END_KEPT)


_0018 = load_version("0018_claim_function.py")
CREATE = _changed(_0018.CREATE, "mailbox_worker_claim_0018")
DROP = _0018.DROP.replace("mailbox_worker_claim_0018(", f"{NAME}(")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CREATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(DROP)
