"""(PostgreSQL) the claim as one function, ``mailbox_worker_claim_0018``: one round trip

A claim was a transaction of four round trips: ``BEGIN``, the statement that locks the
mailboxes, the one that reads their usage and leases their jobs, ``COMMIT``. On an idle
machine each costs 0.3 to 0.4 ms (docs/performance.md "Seventh pass"). This function runs the
same two statements in one call, sent outside an explicit transaction: its implicit
transaction is the claim's, and its commit waits for the WAL's flush as before (a worker may
make a provider request, a draft for a large attachment, before its first write that checks
the lease: the claim must not be one the server could forget).

It is still two statements, for READ COMMITTED's sake: in a ``VOLATILE`` function each
statement takes a new snapshot, so the usage is read by a statement that starts after this
claim holds its mailboxes' locks, and sees every claim committed by the worker that held them
before (docs/architecture.md#mailbox-limits). The rules are those of ``jobs/limits.py``, as
the SQLite path applies them in Python:

* the mailboxes: connected, not paused, of unpaused accounts (docs/privacy.md PP-7), below
  their concurrency, with a due job; in turns between accounts (each account's mailbox with
  the oldest due job, then each account's second...), at most ``p_limit``, locked
  ``FOR NO KEY UPDATE SKIP LOCKED`` (a mailbox being claimed for elsewhere is skipped);
* each one's effective limits (``limits.effective_limits``, whose rules this repeats): its
  own, or where it has none (NULL or 0) ``p_default_concurrency`` and its provider's rate and
  daily cap (``p_providers`` with ``p_provider_rates`` and ``p_provider_caps``; NULL: no such
  limit). (The lock's concurrency test takes only NULL for "none", as the SQLite claim's
  does; the API stores no 0.)
* its usage, deferral (``paused_until``; a later pause is kept), allowance, share
  (``limits.claim_share``: the claim's ``p_limit`` over the locked mailboxes, rounded up),
  daily cap (``within_daily_cap``) and the round robin, as before;
* the chosen jobs move to ``running`` under ``p_owner``'s lease, each with its
  ``job_events`` row, and come back with their payloads (a job whose content was purged is not
  claimed) and the mailbox each was claimed with, as read under the lock.

Every row also carries what ``ClaimBatch`` needs: how many mailboxes were locked, how many
had due jobs before any was skipped for another claimer's lock, how many jobs were due (up to
``p_limit + 1``; in the lease's snapshot when a job was leased), and when the next one that
is not due yet becomes due. When no job was leased it returns one row with those only.

Its plans are generic (``plan_cache_mode`` set on the function, so on nothing else): the plan
cache had kept planning both statements at every call (their generic estimates, with arrays
of unknown length, exceed the custom plans'), about 1.1 ms of an idle claim. The states they
filter on are constants in the text, not parameters.

Each change to the claim is a new migration that creates a function of a new name (the
migration's number in it) and leaves this one for the release before, which may still be
running during a deploy; the migration after that drops it. The release before this one
keeps its own two statements and works beside it. The function returns rows of ``jobs`` and
``mailboxes``: dropping either table needs it dropped first. Behind a transaction pooler the
call is made in an explicit transaction (``jobs/queue.py``).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 18:40:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

QUEUED, RUNNING, CONNECTED = "queued", "running", "connected"

_DUE = f"""(SELECT count(*) FROM (SELECT 1 FROM jobs AS j
                                  WHERE j.state = '{QUEUED}' AND j.run_after <= p_now
                                  LIMIT p_limit + 1) AS due_jobs)"""  # noqa: S608 - constants

CREATE = f"""
CREATE FUNCTION mailbox_worker_claim_0018(
    p_now timestamptz, p_limit integer, p_default_concurrency integer,
    p_providers varchar[], p_provider_rates integer[], p_provider_caps integer[],
    p_minute_ago timestamptz, p_day_ago timestamptz,
    p_rate_window interval, p_daily_window interval,
    p_owner varchar, p_expires_at timestamptz, p_event_at timestamptz, p_worker varchar)
RETURNS TABLE (claimed_job jobs, claimed_payload text, claimed_mailbox mailboxes,
               claim_locked integer, claim_waiting integer, claim_due integer,
               claim_next_due timestamptz)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
AS $function$
#variable_conflict use_column
DECLARE
    v_mailboxes mailboxes[];
    v_waiting integer;
    v_due integer;
    v_next_due timestamptz;
    v_locked integer;
    v_share integer;
BEGIN
    -- 1. Lock the mailboxes (and see the queue, for the worker's next wait).
    WITH locked AS (
        SELECT m AS mailbox, turns.waiting, turns.turn, turns.oldest_due, m.id
        FROM mailboxes AS m
        JOIN (
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
                  AND (mb.paused_until IS NULL OR mb.paused_until <= p_now)
                  AND (SELECT count(*) FROM jobs AS j
                       WHERE j.mailbox_id = mb.id AND j.state = '{RUNNING}')
                      < coalesce(mb.max_concurrency, p_default_concurrency)
                  AND NOT EXISTS (SELECT 1 FROM accounts AS a
                                  WHERE a.id = mb.account_id AND a.paused_at IS NOT NULL)
            ) AS waiting
            WHERE waiting.oldest_due <= p_now
        ) AS turns ON turns.id = m.id
        ORDER BY turns.turn, turns.oldest_due, m.id
        LIMIT p_limit
        FOR NO KEY UPDATE OF m SKIP LOCKED
    )
    SELECT (SELECT array_agg(locked.mailbox ORDER BY locked.turn, locked.oldest_due, locked.id)
            FROM locked),
           (SELECT max(locked.waiting) FROM locked),
           {_DUE},
           (SELECT min(j.run_after) FROM jobs AS j
            WHERE j.state = '{QUEUED}' AND j.run_after > p_now)
    INTO v_mailboxes, v_waiting, v_due, v_next_due;

    v_locked := coalesce(cardinality(v_mailboxes), 0);
    IF v_locked = 0 THEN
        RETURN QUERY SELECT NULL::jobs, NULL::text, NULL::mailboxes, 0, 0, v_due, v_next_due;
        RETURN;
    END IF;
    v_share := (p_limit + v_locked - 1) / v_locked;

    -- 2. A new snapshot: their usage, and the lease.
    RETURN QUERY
    WITH locked AS (
        SELECT v_mailboxes[i] AS mailbox, (v_mailboxes[i]).id AS mailbox_id, i AS position,
               coalesce(nullif((v_mailboxes[i]).max_concurrency, 0), p_default_concurrency)
                   AS concurrency,
               coalesce(nullif((v_mailboxes[i]).rate_per_minute, 0),
                        (SELECT d.rate
                         FROM unnest(p_providers, p_provider_rates) AS d (provider, rate)
                         WHERE d.provider = (v_mailboxes[i]).provider)) AS rate,
               coalesce(nullif((v_mailboxes[i]).daily_recipient_cap, 0),
                        (SELECT d.cap
                         FROM unnest(p_providers, p_provider_caps) AS d (provider, cap)
                         WHERE d.provider = (v_mailboxes[i]).provider)) AS cap
        FROM generate_subscripts(v_mailboxes, 1) AS i
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
                   count(*) FILTER (WHERE job.claimed_at > p_minute_ago) AS claimed_last_minute,
                   coalesce(sum(job.recipient_count) FILTER (WHERE job.claimed_at > p_day_ago),
                            0) AS recipients_last_day,
                   min(job.claimed_at) FILTER (WHERE job.claimed_at > p_minute_ago)
                       AS oldest_minute,
                   min(job.claimed_at) FILTER (WHERE job.claimed_at > p_day_ago) AS oldest_day
            FROM jobs AS job
            WHERE job.mailbox_id = locked.mailbox_id
              AND (job.state = '{RUNNING}'
                   OR job.claimed_at > CASE WHEN locked.cap IS NOT NULL THEN p_day_ago
                                            WHEN locked.rate IS NOT NULL THEN p_minute_ago
                                            ELSE CAST('infinity' AS timestamptz) END)
        ) AS used
    ),
    candidates AS (
        SELECT next.id, next.recipients, usage.mailbox_id, usage.position, usage.remaining,
               row_number() OVER mailbox_order AS rank,
               sum(next.recipients) OVER mailbox_order AS cumulative
        FROM usage CROSS JOIN LATERAL (
            SELECT job.id, job.priority, job.run_after, job.created_at,
                   job.recipient_count AS recipients
            FROM jobs AS job
            WHERE job.mailbox_id = usage.mailbox_id AND job.state = '{QUEUED}'
              AND job.run_after <= p_now
            ORDER BY job.priority DESC, job.run_after, job.created_at
            LIMIT least(usage.allowance, v_share)
        ) AS next
        WHERE usage.deferred IS NULL
        WINDOW mailbox_order AS (PARTITION BY usage.mailbox_id
                                 ORDER BY next.priority DESC, next.run_after, next.created_at
                                 ROWS UNBOUNDED PRECEDING)
    ),
    deferrals AS (
        SELECT usage.mailbox_id,
               CASE WHEN usage.deferred = 'rate_limit'
                        THEN coalesce(usage.oldest_minute, p_now) + p_rate_window
                    ELSE coalesce(usage.oldest_day, p_now) + p_daily_window
               END AS until,
               coalesce(usage.deferred, 'daily_cap') AS reason
        FROM usage
        WHERE usage.deferred IS NOT NULL
           OR EXISTS (SELECT 1 FROM candidates
                      WHERE candidates.mailbox_id = usage.mailbox_id AND candidates.rank = 1
                        AND candidates.cumulative > candidates.remaining)
    ),
    deferred AS (
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
        LIMIT p_limit
    ),
    leased AS (
        UPDATE jobs SET state = '{RUNNING}', lease_owner = p_owner,
                        lease_expires_at = p_expires_at, updated_at = p_now, claimed_at = p_now
        FROM (SELECT chosen.id
              FROM chosen JOIN job_contents AS content ON content.job_id = chosen.id) AS chosen
        WHERE jobs.id = chosen.id AND jobs.state = '{QUEUED}'
        RETURNING jobs.*
    ),
    events AS (
        INSERT INTO job_events (job_id, at, kind, from_state, to_state, worker, public_id)
        SELECT leased.id, p_event_at, 'state', '{QUEUED}', '{RUNNING}', p_worker,
               'jev_' || replace(CAST(gen_random_uuid() AS text), '-', '')
        FROM leased
    )
    SELECT leased::jobs, content.payload, locked.mailbox, v_locked, v_waiting,
           CAST({_DUE} AS integer), v_next_due
    FROM leased
    JOIN chosen ON chosen.id = leased.id
    JOIN job_contents AS content ON content.job_id = leased.id
    JOIN locked ON locked.mailbox_id = leased.mailbox_id
    ORDER BY chosen.rank, chosen.position;

    IF NOT FOUND THEN
        RETURN QUERY SELECT NULL::jobs, NULL::text, NULL::mailboxes, v_locked, v_waiting,
                            v_due, v_next_due;
    END IF;
END
$function$
"""  # noqa: S608 - only constants of this module are interpolated

DROP = (
    "DROP FUNCTION mailbox_worker_claim_0018(timestamptz, integer, integer, varchar[], integer[], "
    "integer[], timestamptz, timestamptz, interval, interval, varchar, timestamptz, "
    "timestamptz, varchar)"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CREATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(DROP)
