"""The claim on PostgreSQL: one call of the function ``mailbox_worker_claim_0023`` (migration
0023, which made 0022's function compare the states of a mailbox's own jobs as values, so
that stale statistics cannot send those reads through every job in the state; 0022's reads the
daily window's whole hours from ``mailbox_claim_hours``, 0021's finds its candidates from the
queued jobs, 0020's locks the mailboxes one at a time until they can fill the claim), sent
outside an explicit transaction, so a claim is one round trip and one (implicit) transaction.

The function first locks the candidate mailboxes (their whole rows: the worker sends each
claimed job with its mailbox as read under this lock, without reading it again), then, in a
statement of its own and so in a snapshot taken after the last lock, reads their usage and
leases their jobs by the rules of ``jobs/limits.py`` (the SQLite path applies the same
functions in Python). The docstrings of ``db/migrations/versions/0018_claim_function.py`` and
``0020_claim_in_turn.py`` have the rules and why the usage is read apart,
``0021_claim_from_queued.py`` how the candidates are found, ``0022_claims_by_hour.py`` how
the daily window is read and ``0023_claim_states_as_values.py`` why the states are values.

``CLAIM`` selects each leased job's columns, its payload (no payload is parsed in the
database), its mailbox's columns (prefixed ``mailbox__``, ``MAILBOX_PREFIX``, which no job
column starts with) and the claim's counts for ``ClaimBatch``; with no job leased, one row with
the counts only. It is built once, at import; a claim only binds its parameters.
"""

from __future__ import annotations

from sqlalchemy import Integer, Interval, String, TextualSelect, bindparam, column, text
from sqlalchemy.dialects.postgresql import ARRAY

from mailbox_worker.db.models import Job, JSONText, Mailbox, UTCDateTime

JOB_COLUMNS = [c.name for c in Job.__table__.columns]
MAILBOX_COLUMNS = [c.name for c in Mailbox.__table__.columns]
MAILBOX_PREFIX = "mailbox__"

_SELECTED = ", ".join(
    [
        *(f"(claim.claimed_job).{name} AS {name}" for name in JOB_COLUMNS),
        "claim.claimed_payload AS payload",
        *(f"(claim.claimed_mailbox).{name} AS {MAILBOX_PREFIX}{name}" for name in MAILBOX_COLUMNS),
        "claim.claim_locked AS locked",
        "claim.claim_waiting AS waiting",
        "claim.claim_due AS due",
        "claim.claim_next_due AS next_due",
    ]
)

CLAIM: TextualSelect = (
    text(
        f"""
SELECT {_SELECTED}
FROM mailbox_worker_claim_0023(
    CAST(:now AS timestamptz), CAST(:limit AS integer), CAST(:default_concurrency AS integer),
    CAST(:providers AS varchar[]), CAST(:provider_rates AS integer[]),
    CAST(:provider_caps AS integer[]),
    CAST(:minute_ago AS timestamptz), CAST(:day_ago AS timestamptz),
    CAST(:rate_window AS interval), CAST(:daily_window AS interval),
    CAST(:owner AS varchar), CAST(:expires_at AS timestamptz), CAST(:event_at AS timestamptz),
    CAST(:worker AS varchar)) WITH ORDINALITY AS claim
ORDER BY claim.ordinality
"""  # noqa: S608 - only constants of this module are interpolated
    )
    .bindparams(
        bindparam("now", type_=UTCDateTime),
        bindparam("limit", type_=Integer),
        bindparam("default_concurrency", type_=Integer),
        bindparam("providers", type_=ARRAY(String)),
        bindparam("provider_rates", type_=ARRAY(Integer)),
        bindparam("provider_caps", type_=ARRAY(Integer)),
        bindparam("minute_ago", type_=UTCDateTime),
        bindparam("day_ago", type_=UTCDateTime),
        bindparam("rate_window", type_=Interval),
        bindparam("daily_window", type_=Interval),
        bindparam("owner", type_=String),
        bindparam("expires_at", type_=UTCDateTime),
        bindparam("event_at", type_=UTCDateTime),
        bindparam("worker", type_=String),
    )
    .columns(
        *Job.__table__.columns,
        column("payload", JSONText()),
        *(column(f"{MAILBOX_PREFIX}{c.name}", c.type) for c in Mailbox.__table__.columns),
        column("locked", Integer),
        column("waiting", Integer),
        column("due", Integer),
        column("next_due", UTCDateTime),
    )
)

PAYLOAD_AT = len(JOB_COLUMNS)
"""Where ``CLAIM``'s row holds the payload: after the job's columns, before the mailbox's."""
COUNTS_AT = PAYLOAD_AT + 1 + len(MAILBOX_COLUMNS)
"""Where ``CLAIM``'s row holds the claim's counts, after the mailbox's columns."""

__all__ = [
    "CLAIM",
    "COUNTS_AT",
    "JOB_COLUMNS",
    "MAILBOX_COLUMNS",
    "MAILBOX_PREFIX",
    "PAYLOAD_AT",
]
