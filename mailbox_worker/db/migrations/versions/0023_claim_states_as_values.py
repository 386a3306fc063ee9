"""(PostgreSQL) the claim as ``mailbox_worker_claim_0023``: a mailbox's running, queued and
due jobs counted through its own index range whatever the statistics

0022's function reads, for each mailbox it looks at, its running jobs (its concurrency), and
for each it locks, its due jobs and its next jobs, with the state written as a constant. The
function's plans are generic, but a constant still goes to the planner with the table's
statistics of that state, and statistics gathered while no job ran (or none was queued)
count one such job where there are hundreds: ``jobs (state, run_after)`` then looks as cheap
as the mailbox's own range, and each of those reads went through every running (or queued)
job of every mailbox. With 300 running jobs, statement 1 took 6.1 ms where the mailboxes'
ranges take 1.3 ms, and with none queued at the statistics' time, 27 ms against 1.4
(docs/performance.md "Eighteenth pass").

Now those four comparisons take the state from a variable of the function (``v_running``,
``v_queued``), a parameter to the generic plan, which estimates it as any state: a share of
the table, so the planner reads the mailbox's range, ``jobs (mailbox_id, state, run_after)``
or ``jobs (mailbox_id, state, priority DESC, run_after, created_at)``. The chosen jobs are
leased by key, their state compared as ``jobs.state || ''`` (``models.keyed_state``): with
the next jobs estimated as a share of the table, a constant there let the planner join them
to every queued job. The skip scan of the queued jobs keeps its constant: ``ix_jobs_queued``
is partial, and its predicate needs it. Nothing else changes.

The function is 0022's text with the name and those comparisons changed (``_changed``, which
fails rather than create anything else if 0022's text no longer holds them;
``tests/unit/test_claim_migrations.py`` holds the result to the text released). 0022's
function stays, and 0020's too: the release before calls one of them (0020's if it is the
release before 0021 and 0022, which came together). 0021's, which no release calls, is
dropped (docs/deploy.md).

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 23:55:00.000000
"""

from __future__ import annotations

from alembic import op

from mailbox_worker.db.migrations import load_version

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

NAME = "mailbox_worker_claim_0023"

_0022 = load_version("0022_claims_by_hour.py")
_0021 = _0022._0021
QUEUED, RUNNING = _0022._0020.QUEUED, _0022._0020.RUNNING

# Each part of 0022's text this replaces, then what replaces it.
_REPLACED = {
    "    v_due_here integer;\n": f"""\
    v_due_here integer;
    -- the states of a mailbox's own jobs, compared as values: the generic plan estimates
    -- them as any state, not by statistics of a moment when none had it
    v_running varchar := '{RUNNING}';
    v_queued varchar := '{QUEUED}';
""",
    f"                                                   AND j.state = '{RUNNING}') AS free\n": (
        "                                                   AND j.state = v_running) AS free\n"
    ),
    f"              WHERE j.mailbox_id = v_candidate.id AND j.state = '{QUEUED}'\n": (
        "              WHERE j.mailbox_id = v_candidate.id AND j.state = v_queued\n"
    ),
    f"                    WHERE j.mailbox_id = locked.mailbox_id AND j.state = '{RUNNING}')\n": (
        "                    WHERE j.mailbox_id = locked.mailbox_id AND j.state = v_running)\n"
    ),
    f"            WHERE job.mailbox_id = usage.mailbox_id AND job.state = '{QUEUED}'\n": (
        "            WHERE job.mailbox_id = usage.mailbox_id AND job.state = v_queued\n"
    ),
    # The chosen jobs, leased by key: with the candidates estimated as any state's share, the
    # constant here let the planner join them to every queued job (5,000 read for a claim of
    # 10, with statistics taken while none was queued).
    f"        WHERE jobs.id = chosen.id AND jobs.state = '{QUEUED}'\n": (
        f"        WHERE jobs.id = chosen.id AND (jobs.state || '') = '{QUEUED}'\n"
    ),
}


def _changed(create: str, old_name: str) -> str:
    """0022's ``CREATE FUNCTION`` as this migration's: its name, two variables, the four
    comparisons of a mailbox's jobs' state, and the lease's by key."""
    if create.count(f"{old_name}(") != 1 or any(create.count(old) != 1 for old in _REPLACED):
        raise RuntimeError("migration 0022's function is not the one 0023 changes")
    changed = create.replace(f"{old_name}(", f"{NAME}(")
    for old, new in _REPLACED.items():
        changed = changed.replace(old, new)
    return changed


CREATE = _changed(_0022.CREATE, "mailbox_worker_claim_0022")
DROP = _0022.DROP.replace("mailbox_worker_claim_0022(", f"{NAME}(")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CREATE)
        op.execute(_0021.DROP)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_0021.CREATE)
        op.execute(DROP)
