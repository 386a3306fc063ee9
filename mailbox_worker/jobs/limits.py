"""Per-mailbox sending limits, as pure rules: what a mailbox may be given at claim time.

A mailbox has a concurrency limit (jobs ``running`` at once), a rate (jobs claimed in the
last minute) and a daily cap (envelope recipients of the jobs claimed in the last 24 hours).
Each is the mailbox's own value or, when NULL, the default for its provider. ``JobQueue.claim``
reads a mailbox's usage under a lock on its row and asks these functions how many of its jobs
it may take now, or until when to defer them (docs/architecture.md#mailbox-limits).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailbox_worker.db.models import Mailbox

RATE_WINDOW = dt.timedelta(minutes=1)
DAILY_WINDOW = dt.timedelta(days=1)


@dataclass(frozen=True)
class ProviderLimits:
    """A provider's default rate and daily cap; None means no limit of that kind."""

    rate_per_minute: int | None = None
    daily_recipient_cap: int | None = None


def _provider_defaults() -> dict[str, ProviderLimits]:
    # Exchange Online: 30 messages a minute, 10,000 recipients a day. Gmail: 2,000 a day for
    # Workspace (500 for consumer accounts: set it on the mailbox), no per-minute figure.
    return {
        "microsoft": ProviderLimits(rate_per_minute=30, daily_recipient_cap=10_000),
        "google": ProviderLimits(rate_per_minute=None, daily_recipient_cap=2_000),
    }


@dataclass(frozen=True)
class LimitDefaults:
    """What applies to a mailbox whose own limit is NULL."""

    max_concurrency: int = 4
    providers: Mapping[str, ProviderLimits] = field(default_factory=_provider_defaults)


@dataclass(frozen=True)
class MailboxLimits:
    """A mailbox's effective limits."""

    max_concurrency: int
    rate_per_minute: int | None
    daily_recipient_cap: int | None


@dataclass(frozen=True)
class MailboxUsage:
    """What a mailbox used, read under the lock on its row."""

    running: int = 0
    claimed_last_minute: int = 0
    recipients_last_day: int = 0
    oldest_claim_last_minute: dt.datetime | None = None
    oldest_claim_last_day: dt.datetime | None = None


@dataclass(frozen=True)
class Deferral:
    """No job of the mailbox is claimed before ``until`` (``reason``: rate_limit, daily_cap)."""

    until: dt.datetime
    reason: str


def effective_limits(mailbox: Mailbox, defaults: LimitDefaults) -> MailboxLimits:
    """The mailbox's own limits, its provider's defaults where it has none (NULL or 0).
    PostgreSQL's claim function (migration 0018's, as 0020 left it) repeats these rules in SQL;
    a change here is a new claim function there."""
    provider_limits = defaults.providers.get(mailbox.provider, ProviderLimits())
    return MailboxLimits(
        max_concurrency=mailbox.max_concurrency or defaults.max_concurrency,
        rate_per_minute=mailbox.rate_per_minute or provider_limits.rate_per_minute,
        daily_recipient_cap=mailbox.daily_recipient_cap or provider_limits.daily_recipient_cap,
    )


def deferral(limits: MailboxLimits, usage: MailboxUsage, now: dt.datetime) -> Deferral | None:
    """When the mailbox reached its rate or daily cap: until when its jobs wait.

    The wait ends when the oldest claim in the window leaves it, which frees at least one
    unit; if that is not enough for the next job, the next claim defers again.
    """
    daily = limits.daily_recipient_cap
    if daily is not None and usage.recipients_last_day >= daily:
        oldest = usage.oldest_claim_last_day or now
        return Deferral(oldest + DAILY_WINDOW, "daily_cap")
    rate = limits.rate_per_minute
    if rate is not None and usage.claimed_last_minute >= rate:
        oldest = usage.oldest_claim_last_minute or now
        return Deferral(oldest + RATE_WINDOW, "rate_limit")
    return None


def allowance(limits: MailboxLimits, usage: MailboxUsage) -> int:
    """How many more jobs the mailbox may have claimed now (concurrency and rate)."""
    free = limits.max_concurrency - usage.running
    if limits.rate_per_minute is not None:
        free = min(free, limits.rate_per_minute - usage.claimed_last_minute)
    return max(free, 0)


def within_daily_cap(
    limits: MailboxLimits, usage: MailboxUsage, recipient_counts: Sequence[int]
) -> int:
    """How many of the jobs (in claim order, by their recipient counts) fit under the cap."""
    if limits.daily_recipient_cap is None:
        return len(recipient_counts)
    remaining = limits.daily_recipient_cap - usage.recipients_last_day
    taken = 0
    for count in recipient_counts:
        if count > remaining:
            break
        remaining -= count
        taken += 1
    return taken


def round_robin(limit: int, allowances: Sequence[int]) -> list[int]:
    """Share ``limit`` claims between mailboxes one at a time, in their order, each up to its
    allowance: with 8 slots, a mailbox with thousands of jobs cannot take a turn from one
    with a single job."""
    shares = [0] * len(allowances)
    left = limit
    while left > 0:
        given = False
        for index, most in enumerate(allowances):
            if left > 0 and shares[index] < most:
                shares[index] += 1
                left -= 1
                given = True
        if not given:
            break
    return shares


def claim_share(limit: int, mailboxes: int) -> int:
    """The most jobs one mailbox is given by a claim of ``limit`` jobs shared round robin
    between ``mailboxes`` (each has a due job): its fair share, ``limit / mailboxes`` rounded
    up. A claim reads no mailbox's jobs beyond it, so it reads at most about ``limit`` jobs
    rather than ``limit`` of each mailbox; when some mailboxes have fewer jobs than their
    share, the claim takes fewer than ``limit`` and the worker, having claimed some, claims
    again at once. PostgreSQL's claim function (migration 0018's, as 0020 left it) repeats it
    in SQL."""
    return -(-limit // max(mailboxes, 1))


def claim_room(limit: int, due: int, free: int, accounts: int) -> int:
    """How many jobs of a claim of ``limit`` a mailbox can take, as far as the claim knows
    before it locks the mailbox and reads its usage: its ``due`` jobs, below its concurrency
    (``free`` slots), and at most an equal part of the claim for each of the ``accounts`` with
    due jobs (so that one account's mailbox, however much it may take, leaves room for the
    others' in the same claim). Its rate and daily cap, read after the lock, may allow it
    less."""
    return max(0, min(due, free, claim_share(limit, accounts)))


def mailboxes_to_lock(limit: int, rooms: Sequence[int]) -> int:
    """How many of the candidate mailboxes (in turn order, each with its ``claim_room``) a
    claim of ``limit`` locks: the first ones whose rooms together hold ``limit`` jobs, and no
    more than ``limit`` mailboxes. A claim that locks only what it can fill leaves the other
    mailboxes to claimers running at the same time, instead of making them wait for its lock
    (docs/architecture.md#mailbox-limits). PostgreSQL's claim function (migration 0020's)
    repeats it in SQL, passing over mailboxes another claimer holds."""
    taken = 0
    for locked, room in enumerate(rooms[:limit], start=1):
        taken += room
        if taken >= limit:
            return locked
    return min(len(rooms), limit)


def recipient_count(payload: Mapping[str, Any]) -> int:
    """Envelope recipients (To, Cc, Bcc) of a job's message; at least 1."""
    return max(1, sum(len(payload.get(name) or ()) for name in ("to", "cc", "bcc")))


__all__ = [
    "DAILY_WINDOW",
    "RATE_WINDOW",
    "Deferral",
    "LimitDefaults",
    "MailboxLimits",
    "MailboxUsage",
    "ProviderLimits",
    "allowance",
    "claim_room",
    "claim_share",
    "deferral",
    "effective_limits",
    "mailboxes_to_lock",
    "recipient_count",
    "round_robin",
    "within_daily_cap",
]
