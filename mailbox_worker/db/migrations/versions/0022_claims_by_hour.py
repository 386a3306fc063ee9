"""the daily cap read from each mailbox's recipients by the hour (``mailbox_claim_hours``, kept
by triggers on ``jobs``), not from every job it sent that day; (PostgreSQL) the claim as
``mailbox_worker_claim_0022``

A mailbox's daily cap is counted from its jobs' own claim times (docs/architecture.md
#mailbox-limits): the recipients of every job claimed in the last 24 hours. Every claim up to
0021 read each of those jobs for each mailbox it locked, about 0.3 us each: 3.3 ms for a
mailbox that had sent 9,000 that day, paid again at each of its claims, and a claim locks up
to 25 mailboxes (docs/performance.md "Fourteenth pass").

Now each mailbox's claimed recipients are also kept by the hour (UTC) in
``mailbox_claim_hours``, and a claim reads the whole hours inside the window from there (at
most 24 rows) and only the jobs of the hour the window starts in from ``jobs`` (claimed after
the window's start and before that hour's end, by ``jobs (mailbox_id, claimed_at)``): the same
sum, exactly, from a twenty-fourth of the rows. The oldest claim in the window (when a deferred
mailbox may send again) is the first entry of that index after the window's start.

Triggers on ``jobs`` keep the hours: a job whose ``claimed_at`` is set (a claim), moved (a
claim again after a retry: it counts once, at its latest claim, as before), or whose row is
deleted, moves its ``recipient_count`` between hours. Being triggers, they keep the hours for
every writer: the release before's claim during a deploy, the SQLite claim, a test or an
operator setting ``claimed_at``. A job claimed more than two days before it is changed or
deleted is not counted back: no claim reads hours that old, and the retention loop deletes
them (``db/retention.py``). The migration fills the hours of the last two days from the jobs,
after creating the triggers, whose lock on ``jobs`` keeps every write out until it commits:
no claim falls between the two.

Statement 1 also counts a candidate's due jobs only once it has locked it, in the lock loop
(its room is the same: its due jobs, below its concurrency, at most its account's part of the
claim). 0021 counted them for every candidate before sorting them into turns, though a claim
locks about 25: with 5,556 mailboxes with due jobs, 11,113 of a claim's 61,166 buffers went to
mailboxes it never locked (docs/performance.md "Fourteenth pass").

The usage read also counts the running jobs by the mailbox's own index range: 0021's read
them in one scan with its claims, which the planner made a scan of every running job of every
mailbox (``jobs (state, run_after)``), once per mailbox locked.

The triggers live on ``jobs``: a later migration that rebuilds that table on SQLite
(``batch_alter_table`` copies it to a new table) must create them again;
``tests/integration/test_claim_hours.py`` fails at head without them.

The claim function is 0021's text with the name, one variable, and the usage read of
statement 2 changed (``_changed``, which fails rather than create anything else if 0021's text
no longer holds them; ``tests/unit/test_claim_migrations.py`` holds the result to the text
released). 0021's function stays, and 0020's too: 0021 and 0022 were released together, so
the release before calls 0020's, and the triggers count its claims in the hours as they count
every claim. The first claim migration of a later release drops both (docs/deploy.md).
SQLite has the same table and triggers; its claim reads them the same way
(``jobs/claims.py``).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 12:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mailbox_worker.db.migrations import lines_of, load_version
from mailbox_worker.db.models import UTCDateTime

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

NAME = "mailbox_worker_claim_0022"
TABLE = "mailbox_claim_hours"
KEPT = "2 days"
"""How far back a claim's hour is still counted down when its job changes: no claim reads
hours older than its daily window (one day)."""

_0021 = load_version("0021_claim_from_queued.py")
_0020 = _0021._0020

# PostgreSQL: the hour (UTC) a claim time falls in, whatever the session's time zone.
_HOUR_PG = "to_timestamp(floor(extract(epoch FROM {0}) / 3600) * 3600)"

TRIGGER_FUNCTION_PG = f"""
CREATE FUNCTION mailbox_worker_count_claim_hours() RETURNS trigger
LANGUAGE plpgsql AS $function$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.claimed_at IS NOT NULL
       AND OLD.claimed_at > now() - interval '{KEPT}' THEN
        UPDATE {TABLE} SET recipients = recipients - OLD.recipient_count
        WHERE mailbox_id = OLD.mailbox_id AND hour = {_HOUR_PG.format("OLD.claimed_at")};
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') AND NEW.claimed_at IS NOT NULL THEN
        INSERT INTO {TABLE} AS counted (mailbox_id, hour, recipients)
        VALUES (NEW.mailbox_id, {_HOUR_PG.format("NEW.claimed_at")}, NEW.recipient_count)
        ON CONFLICT (mailbox_id, hour)
        DO UPDATE SET recipients = counted.recipients + excluded.recipients;
    END IF;
    RETURN NULL;
END
$function$
"""  # noqa: S608 - constants only
_CHANGED = """(OLD.claimed_at IS DISTINCT FROM NEW.claimed_at
       OR OLD.recipient_count IS DISTINCT FROM NEW.recipient_count
       OR OLD.mailbox_id IS DISTINCT FROM NEW.mailbox_id)"""
TRIGGERS_PG = [
    f"""CREATE TRIGGER jobs_claim_hours_update
    AFTER UPDATE OF claimed_at, recipient_count, mailbox_id ON jobs
    FOR EACH ROW WHEN {_CHANGED}
    EXECUTE FUNCTION mailbox_worker_count_claim_hours()""",
    """CREATE TRIGGER jobs_claim_hours_insert AFTER INSERT ON jobs
    FOR EACH ROW WHEN (NEW.claimed_at IS NOT NULL)
    EXECUTE FUNCTION mailbox_worker_count_claim_hours()""",
    """CREATE TRIGGER jobs_claim_hours_delete AFTER DELETE ON jobs
    FOR EACH ROW WHEN (OLD.claimed_at IS NOT NULL)
    EXECUTE FUNCTION mailbox_worker_count_claim_hours()""",
]
DROP_PG = [
    "DROP TRIGGER jobs_claim_hours_update ON jobs",
    "DROP TRIGGER jobs_claim_hours_insert ON jobs",
    "DROP TRIGGER jobs_claim_hours_delete ON jobs",
    "DROP FUNCTION mailbox_worker_count_claim_hours()",
]

# SQLite stores a UTC time naive, as text ('YYYY-MM-DD HH:MM:SS.ffffff'): its hour is the same
# text with the minutes, seconds and microseconds zeroed.
_HOUR_SQLITE = "strftime('%Y-%m-%d %H:00:00.000000', {0})"
_COUNT_DOWN_SQLITE = f"""
    UPDATE {TABLE} SET recipients = recipients - OLD.recipient_count
    WHERE mailbox_id = OLD.mailbox_id AND hour = {_HOUR_SQLITE.format("OLD.claimed_at")}
      AND OLD.claimed_at > strftime('%Y-%m-%d %H:%M:%f', 'now', '-{KEPT}');"""  # noqa: S608
_COUNT_UP_SQLITE = f"""
    INSERT INTO {TABLE} (mailbox_id, hour, recipients)
    SELECT NEW.mailbox_id, {_HOUR_SQLITE.format("NEW.claimed_at")}, NEW.recipient_count
    WHERE NEW.claimed_at IS NOT NULL
    ON CONFLICT (mailbox_id, hour) DO UPDATE SET recipients = recipients + excluded.recipients;"""
# SQLite's null-safe "differs" is IS NOT (IS DISTINCT FROM only came in SQLite 3.39).
_CHANGED_SQLITE = """(OLD.claimed_at IS NOT NEW.claimed_at
       OR OLD.recipient_count IS NOT NEW.recipient_count
       OR OLD.mailbox_id IS NOT NEW.mailbox_id)"""
TRIGGERS_SQLITE = [
    f"""CREATE TRIGGER jobs_claim_hours_update
    AFTER UPDATE OF claimed_at, recipient_count, mailbox_id ON jobs
    FOR EACH ROW WHEN {_CHANGED_SQLITE}
    BEGIN{_COUNT_DOWN_SQLITE}{_COUNT_UP_SQLITE}
    END""",
    f"""CREATE TRIGGER jobs_claim_hours_insert AFTER INSERT ON jobs
    FOR EACH ROW WHEN NEW.claimed_at IS NOT NULL
    BEGIN{_COUNT_UP_SQLITE}
    END""",
    f"""CREATE TRIGGER jobs_claim_hours_delete AFTER DELETE ON jobs
    FOR EACH ROW WHEN OLD.claimed_at IS NOT NULL
    BEGIN{_COUNT_DOWN_SQLITE}
    END""",
]
DROP_SQLITE = [
    "DROP TRIGGER jobs_claim_hours_update",
    "DROP TRIGGER jobs_claim_hours_insert",
    "DROP TRIGGER jobs_claim_hours_delete",
]

FILL_PG = f"""
INSERT INTO {TABLE} (mailbox_id, hour, recipients)
SELECT mailbox_id, {_HOUR_PG.format("claimed_at")}, sum(recipient_count)
FROM jobs WHERE claimed_at > now() - interval '{KEPT}'
GROUP BY 1, 2
"""  # noqa: S608 - constants only
FILL_SQLITE = f"""
INSERT INTO {TABLE} (mailbox_id, hour, recipients)
SELECT mailbox_id, {_HOUR_SQLITE.format("claimed_at")}, sum(recipient_count)
FROM jobs WHERE claimed_at > strftime('%Y-%m-%d %H:%M:%f', 'now', '-{KEPT}')
GROUP BY 1, 2
"""  # noqa: S608 - constants only

# The claim function: 0021's, with each candidate's due jobs counted once it is locked, and
# the daily window read from the hours. Each part of 0021's text this replaces (taken from it,
# but for two lines), then what replaces it.
_DECLARED = """\
    v_mailbox mailboxes;
BEGIN"""
_DECLARED_NOW = f"""\
    v_mailbox mailboxes;
    v_due_here integer;
    -- the first whole hour inside the daily window: the hours from it on are read from
    -- {TABLE}, the claims before it (after p_day_ago) from jobs
    v_whole_hours timestamptz := {_HOUR_PG.format("p_day_ago")} + interval '1 hour';
BEGIN"""
_ROOM = lines_of(_0021.CREATE, "        SELECT turns.id, turns.waiting,", "            FROM (")
_ROOM_NOW = """\
        -- the room before its due jobs are counted: they are, once it is locked
        SELECT turns.id, turns.waiting,
               least(turns.free, (p_limit + turns.accounts - 1) / turns.accounts) AS room
        FROM (
            SELECT ranked.id, ranked.free, ranked.waiting, ranked.turn, ranked.oldest_due,
                   count(*) FILTER (WHERE ranked.turn = 1) OVER () AS accounts
            FROM (
"""
_LOCKED = lines_of(
    _0021.CREATE,
    "        v_mailboxes := array_append(v_mailboxes, v_mailbox);",
    "        v_room := v_room + coalesce(v_candidate.room, 0);",
)
_LOCKED_NOW = f"""\
        v_mailboxes := array_append(v_mailboxes, v_mailbox);
        -- its due jobs, up to its room: counted only for the mailboxes locked
        SELECT count(*) INTO v_due_here
        FROM (SELECT 1 FROM jobs AS j
              WHERE j.mailbox_id = v_candidate.id AND j.state = '{_0020.QUEUED}'
                AND j.run_after <= p_now
              LIMIT v_candidate.room) AS due_jobs;
        v_room := v_room + v_due_here;
"""  # noqa: S608 - only constants of this module are interpolated
_USED = lines_of(_0021.CREATE, "        FROM locked CROSS JOIN LATERAL (", "        ) AS used")
_USED_NOW = f"""\
        FROM locked CROSS JOIN LATERAL (
            SELECT (SELECT count(*) FROM jobs AS j
                    WHERE j.mailbox_id = locked.mailbox_id AND j.state = '{_0020.RUNNING}')
                       AS running,
                   minute.claimed_last_minute, minute.oldest_minute,
                   day.recipients_last_day, day.oldest_day
            FROM (
                -- the rate window (only with a rate): its claims, by (mailbox_id, claimed_at)
                SELECT count(*) AS claimed_last_minute, min(job.claimed_at) AS oldest_minute
                FROM jobs AS job
                WHERE job.mailbox_id = locked.mailbox_id
                  AND job.claimed_at > CASE WHEN locked.rate IS NOT NULL THEN p_minute_ago
                                            ELSE CAST('infinity' AS timestamptz) END
            ) AS minute CROSS JOIN LATERAL (
                -- the daily window: its whole hours from {TABLE}, the claims of the hour it
                -- starts in from jobs, and its oldest claim (only with a daily cap)
                SELECT CASE WHEN locked.cap IS NULL THEN 0 ELSE
                           coalesce((SELECT sum(h.recipients) FROM {TABLE} AS h
                                     WHERE h.mailbox_id = locked.mailbox_id
                                       AND h.hour >= v_whole_hours), 0)
                           + coalesce((SELECT sum(j.recipient_count) FROM jobs AS j
                                       WHERE j.mailbox_id = locked.mailbox_id
                                         AND j.claimed_at > p_day_ago
                                         AND j.claimed_at < v_whole_hours), 0)
                       END AS recipients_last_day,
                       CASE WHEN locked.cap IS NOT NULL THEN
                           (SELECT min(j.claimed_at) FROM jobs AS j
                            WHERE j.mailbox_id = locked.mailbox_id
                              AND j.claimed_at > p_day_ago)
                       END AS oldest_day
                OFFSET 0  -- a plan of its own: each sum read once, however often used
            ) AS day
        ) AS used
"""  # noqa: S608 - only constants of this module are interpolated


def _changed(create: str, old_name: str) -> str:
    """0021's ``CREATE FUNCTION`` as this migration's: its name, two variables, the rooms of
    statement 1's candidates, the lock loop's count of due jobs, and the usage read."""
    replaced = {
        _DECLARED: _DECLARED_NOW,
        _ROOM: _ROOM_NOW,
        _LOCKED: _LOCKED_NOW,
        _USED: _USED_NOW,
    }
    if create.count(f"{old_name}(") != 1 or any(create.count(old) != 1 for old in replaced):
        raise RuntimeError("migration 0021's function is not the one 0022 changes")
    changed = create.replace(f"{old_name}(", f"{NAME}(")
    for old, new in replaced.items():
        changed = changed.replace(old, new)
    return changed


CREATE = _changed(_0021.CREATE, "mailbox_worker_claim_0021")
DROP = _0021.DROP.replace("mailbox_worker_claim_0021(", f"{NAME}(")


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("mailbox_id", sa.String(length=40), nullable=False),
        sa.Column("hour", UTCDateTime(), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["mailbox_id"],
            ["mailboxes.id"],
            name=op.f("fk_mailbox_claim_hours_mailbox_id_mailboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("mailbox_id", "hour", name=op.f("pk_mailbox_claim_hours")),
    )
    with op.batch_alter_table(TABLE, schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mailbox_claim_hours_hour"), ["hour"], unique=False)
    # The triggers first: creating them locks ``jobs`` against writes until the migration
    # commits, so no claim can fall between the fill's snapshot and the triggers.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(TRIGGER_FUNCTION_PG)
        for statement in TRIGGERS_PG:
            op.execute(statement)
        op.execute(FILL_PG)
        op.execute(CREATE)
    else:
        for statement in TRIGGERS_SQLITE:
            op.execute(statement)
        op.execute(FILL_SQLITE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(DROP)
        for statement in DROP_PG:
            op.execute(statement)
    else:
        for statement in DROP_SQLITE:
            op.execute(statement)
    with op.batch_alter_table(TABLE, schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mailbox_claim_hours_hour"))
    op.drop_table(TABLE)
