"""The claim on PostgreSQL in two statements: lock the candidate mailboxes (``LOCK_MAILBOXES``,
which returns their whole rows: the worker sends each claimed job with its mailbox as read under
this lock, without reading it again; and, in the same statement, how many jobs are due and when
the next one becomes due, for the worker's next wait), then one statement that reads their usage
and leases their jobs (``LEASE_JOBS``).

Two, not one, because of READ COMMITTED: a statement sees only what was committed before it
started. The worker that held a mailbox's lock before us committed its claims before releasing
the lock, so the usage must be read by a statement that starts after we hold the lock, or it
would miss those claims and the mailbox could exceed its limits. ``LEASE_JOBS`` applies the
rules of ``jobs/limits.py`` in SQL (the SQLite path applies the same functions in Python):

* each mailbox's usage: jobs ``running``, claims in the last minute, recipients of the claims in
  the last 24 hours, and the oldest claim of each window (``MailboxUsage``);
* a mailbox at its daily cap, or else at its rate, is deferred (``paused_until``; a later pause
  is kept) and gets nothing (``deferral``); so is one whose next job does not fit under its cap;
* the others get their next due jobs (priority, then ``run_after``, then age) as their free
  concurrency and rate allow (``allowance``), at most their share of the claim
  (``claim_share``), while their recipients (counted at enqueue: ``jobs.recipient_count``)
  fit under the daily cap (``within_daily_cap``);
* the ``limit`` slots go round robin in the lock order, every mailbox's first job, then every
  mailbox's second... (``round_robin``);
* the chosen jobs still ``queued`` move to ``running`` under the claim's lease, each with its
  ``job_events`` row, and come back with their payloads (a job whose content was purged is
  not claimed), and with how many jobs were due as this statement saw them, before its lease
  (``ClaimBatch.due_left``). No payload is parsed in the database.

Both are built once, at import; a claim only binds its parameters.
"""

from __future__ import annotations

from sqlalchemy import Integer, Interval, String, TextualSelect, bindparam, column, text
from sqlalchemy.dialects.postgresql import ARRAY

from mailbox_worker.db.models import Job, JSONText, Mailbox, UTCDateTime
from mailbox_worker.states import JobState, MailboxState

QUEUED, RUNNING, CONNECTED = (
    JobState.QUEUED.value,
    JobState.RUNNING.value,
    MailboxState.CONNECTED.value,
)

MAILBOX_COLUMNS = [c.name for c in Mailbox.__table__.columns]

_DUE = f"""(SELECT count(*) FROM (SELECT 1 FROM jobs AS j
                            WHERE j.state = '{QUEUED}' AND j.run_after <= :now
                            LIMIT :limit + 1) AS due_jobs)"""  # noqa: S608 - constants only
"""The due jobs of every mailbox, counted up to one more than a claim of ``limit`` can take
(one index probe of ``(state, run_after)``): in the lock's statement, and in the lease's,
whose snapshot may see jobs the lock's did not (``ClaimBatch.due_left``)."""

LOCK_MAILBOXES: TextualSelect = (
    text(
        f"""
WITH locked AS (
    SELECT {", ".join(f"m.{name}" for name in MAILBOX_COLUMNS)}, turns.waiting, turns.turn,
           turns.oldest_due
    FROM mailboxes AS m
    JOIN (
        -- Turns between accounts: each account's mailbox with the oldest due job, then each
        -- account's second... Every probe of jobs is one index lookup per mailbox.
        -- ``waiting`` counts them all, before any is skipped for another claimer's lock
        -- (ClaimBatch.more).
        SELECT waiting.id, waiting.oldest_due,
               row_number() OVER (PARTITION BY waiting.account_id
                                  ORDER BY waiting.oldest_due, waiting.id) AS turn,
               count(*) OVER () AS waiting
        FROM (
            SELECT mb.id, mb.account_id,
                   (SELECT min(j.run_after) FROM jobs AS j
                    WHERE j.mailbox_id = mb.id AND j.state = '{QUEUED}') AS oldest_due
            FROM mailboxes AS mb
            WHERE mb.state = '{CONNECTED}'
              AND (mb.paused_until IS NULL OR mb.paused_until <= :now)
              AND (SELECT count(*) FROM jobs AS j
                   WHERE j.mailbox_id = mb.id AND j.state = '{RUNNING}')
                  < coalesce(mb.max_concurrency, :default_concurrency)
              -- A paused account's jobs wait (docs/privacy.md PP-7).
              AND NOT EXISTS (SELECT 1 FROM accounts AS a
                              WHERE a.id = mb.account_id AND a.paused_at IS NOT NULL)
        ) AS waiting
        WHERE waiting.oldest_due <= :now
    ) AS turns ON turns.id = m.id
    ORDER BY turns.turn, turns.oldest_due, m.id
    LIMIT :limit
    -- NO KEY UPDATE: it does not block inserting jobs (their foreign key takes KEY SHARE on
    -- this row), but two claimers exclude each other; SKIP LOCKED: a mailbox being claimed
    -- for is skipped this round.
    FOR NO KEY UPDATE OF m SKIP LOCKED
),
queue AS (
    -- The whole queue as this statement sees it, for the worker's next wait (ClaimBatch):
    -- the due jobs, whatever their mailbox (counted up to one more than the claim can take),
    -- and when the next one that is not due yet becomes due. Two index lookups.
    SELECT {_DUE} AS due,
           (SELECT min(j.run_after) FROM jobs AS j
            WHERE j.state = '{QUEUED}' AND j.run_after > :now) AS next_due
)
-- One row even when no mailbox was locked (its mailbox columns null), for the queue's.
SELECT {", ".join(f"locked.{name}" for name in MAILBOX_COLUMNS)}, locked.waiting,
       queue.due, queue.next_due
FROM queue LEFT JOIN locked ON true
ORDER BY locked.turn, locked.oldest_due, locked.id
"""  # noqa: S608 - only constants of this module are interpolated
    )
    .bindparams(
        bindparam("now", type_=UTCDateTime),
        bindparam("default_concurrency", type_=Integer),
        bindparam("limit", type_=Integer),
    )
    .columns(
        *Mailbox.__table__.columns,
        column("waiting", Integer),
        column("due", Integer),
        column("next_due", UTCDateTime),
    )
)


JOB_COLUMNS = [c.name for c in Job.__table__.columns]
_ORDER = "job.priority DESC, job.run_after, job.created_at"

LEASE_JOBS: TextualSelect = (
    text(
        f"""
WITH locked AS (
    SELECT * FROM unnest(CAST(:mailbox_ids AS varchar[]), CAST(:concurrency AS integer[]),
                         CAST(:rate AS integer[]), CAST(:cap AS integer[]))
        WITH ORDINALITY AS locked (mailbox_id, concurrency, rate, cap, position)
),
usage AS (
    SELECT locked.mailbox_id, locked.position, used.oldest_minute, used.oldest_day,
           CASE WHEN locked.cap IS NOT NULL AND used.recipients_last_day >= locked.cap
                    THEN 'daily_cap'
                WHEN locked.rate IS NOT NULL AND used.claimed_last_minute >= locked.rate
                    THEN 'rate_limit'
           END AS deferred,
           greatest(0, least(locked.concurrency - used.running,
                             coalesce(locked.rate - used.claimed_last_minute,
                                      locked.concurrency - used.running))) AS allowance,
           locked.cap - used.recipients_last_day AS remaining
    FROM locked CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE job.state = '{RUNNING}') AS running,
               count(*) FILTER (WHERE job.claimed_at > :minute_ago) AS claimed_last_minute,
               coalesce(sum(job.recipient_count) FILTER (WHERE job.claimed_at > :day_ago), 0)
                   AS recipients_last_day,
               min(job.claimed_at) FILTER (WHERE job.claimed_at > :minute_ago) AS oldest_minute,
               min(job.claimed_at) FILTER (WHERE job.claimed_at > :day_ago) AS oldest_day
        FROM jobs AS job
        WHERE job.mailbox_id = locked.mailbox_id
          -- Claims are read back only as far as a limit looks: a day for a daily cap, a
          -- minute for a rate, none without either (the running jobs are enough then).
          AND (job.state = '{RUNNING}'
               OR job.claimed_at > CASE WHEN locked.cap IS NOT NULL THEN :day_ago
                                        WHEN locked.rate IS NOT NULL THEN :minute_ago
                                        ELSE CAST('infinity' AS timestamptz) END)
    ) AS used
),
candidates AS (
    SELECT next.id, next.recipients, usage.mailbox_id, usage.position, usage.remaining,
           row_number() OVER mailbox_order AS rank,
           sum(next.recipients) OVER mailbox_order AS cumulative
    FROM usage CROSS JOIN LATERAL (
        -- Recipients were counted at enqueue (jobs.recipient_count); the lease skips a job
        -- whose content was purged.
        SELECT job.id, job.priority, job.run_after, job.created_at,
               job.recipient_count AS recipients
        FROM jobs AS job
        WHERE job.mailbox_id = usage.mailbox_id AND job.state = '{QUEUED}'
          AND job.run_after <= :now
        ORDER BY {_ORDER}
        -- No mailbox gets more than its share of the claim (limits.claim_share).
        LIMIT least(usage.allowance, :share)
    ) AS next
    WHERE usage.deferred IS NULL
    WINDOW mailbox_order AS (PARTITION BY usage.mailbox_id
                             ORDER BY next.priority DESC, next.run_after, next.created_at
                             ROWS UNBOUNDED PRECEDING)
),
deferrals AS (
    SELECT usage.mailbox_id,
           CASE WHEN usage.deferred = 'rate_limit'
                    THEN coalesce(usage.oldest_minute, :now) + :rate_window
                ELSE coalesce(usage.oldest_day, :now) + :daily_window
           END AS until,
           coalesce(usage.deferred, 'daily_cap') AS reason
    FROM usage
    WHERE usage.deferred IS NOT NULL
       OR EXISTS (SELECT 1 FROM candidates
                  WHERE candidates.mailbox_id = usage.mailbox_id AND candidates.rank = 1
                    AND candidates.cumulative > candidates.remaining)
),
deferred AS (
    -- Skip the mailbox until its capacity returns; a later pause already set is kept.
    UPDATE mailboxes SET paused_until = deferrals.until, pause_reason = deferrals.reason
    FROM deferrals
    WHERE mailboxes.id = deferrals.mailbox_id
      AND (mailboxes.paused_until IS NULL OR mailboxes.paused_until < deferrals.until)
    RETURNING mailboxes.id
),
chosen AS (
    SELECT candidates.id, candidates.rank, candidates.position
    FROM candidates
    WHERE candidates.remaining IS NULL OR candidates.cumulative <= candidates.remaining
    ORDER BY candidates.rank, candidates.position
    LIMIT :limit
),
leased AS (
    UPDATE jobs SET state = '{RUNNING}', lease_owner = :owner, lease_expires_at = :expires_at,
                    updated_at = :now, claimed_at = :now
    FROM (SELECT chosen.id
          FROM chosen JOIN job_contents AS content ON content.job_id = chosen.id) AS chosen
    WHERE jobs.id = chosen.id AND jobs.state = '{QUEUED}'
    RETURNING {", ".join(f"jobs.{name}" for name in JOB_COLUMNS)}
),
events AS (
    INSERT INTO job_events (job_id, at, kind, from_state, to_state, worker, public_id)
    SELECT leased.id, :event_at, 'state', '{QUEUED}', '{RUNNING}', :worker,
           'jev_' || replace(CAST(gen_random_uuid() AS text), '-', '')
    FROM leased
)
SELECT {", ".join(f"leased.{name}" for name in JOB_COLUMNS)}, content.payload,
       -- The due jobs as this statement sees them, before its own lease (one snapshot for
       -- both: ClaimBatch.due_left), counted up to one more than the claim can take.
       {_DUE} AS due
FROM leased
JOIN chosen ON chosen.id = leased.id
JOIN job_contents AS content ON content.job_id = leased.id
ORDER BY chosen.rank, chosen.position
"""  # noqa: S608 - only constants of this module are interpolated
    )
    .bindparams(
        bindparam("mailbox_ids", type_=ARRAY(String)),
        bindparam("concurrency", type_=ARRAY(Integer)),
        bindparam("rate", type_=ARRAY(Integer)),
        bindparam("cap", type_=ARRAY(Integer)),
        bindparam("now", type_=UTCDateTime),
        bindparam("minute_ago", type_=UTCDateTime),
        bindparam("day_ago", type_=UTCDateTime),
        bindparam("rate_window", type_=Interval),
        bindparam("daily_window", type_=Interval),
        bindparam("limit", type_=Integer),
        bindparam("share", type_=Integer),
        bindparam("owner", type_=String),
        bindparam("expires_at", type_=UTCDateTime),
        bindparam("event_at", type_=UTCDateTime),
        bindparam("worker", type_=String),
    )
    .columns(*Job.__table__.columns, column("payload", JSONText()), column("due", Integer))
)

__all__ = ["JOB_COLUMNS", "LEASE_JOBS", "LOCK_MAILBOXES", "MAILBOX_COLUMNS"]
