"""The pure rules of per-mailbox limits (jobs/limits.py)."""

from __future__ import annotations

import datetime as dt

from mailbox_worker.db.models import Mailbox
from mailbox_worker.jobs.limits import (
    Deferral,
    LimitDefaults,
    MailboxLimits,
    MailboxUsage,
    allowance,
    claim_room,
    claim_share,
    deferral,
    effective_limits,
    mailboxes_to_lock,
    recipient_count,
    round_robin,
    within_daily_cap,
)

NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)


def test_round_robin_gives_every_mailbox_a_turn_before_anyone_a_second() -> None:
    assert round_robin(8, [4, 1, 4]) == [4, 1, 3]
    assert round_robin(2, [4, 4, 4]) == [1, 1, 0]
    assert round_robin(8, [1, 0, 2]) == [1, 0, 2]
    assert round_robin(0, [3]) == [0]


def test_claim_share_is_the_fair_share_rounded_up() -> None:
    assert [claim_share(8, mailboxes) for mailboxes in (1, 2, 3, 8, 9)] == [8, 4, 3, 1, 1]
    assert claim_share(100, 20) == 5
    assert claim_share(100, 0) == 100  # no mailbox: nothing to share, nothing read
    # Every mailbox's share together always covers the claim.
    assert all(
        claim_share(limit, mailboxes) * mailboxes >= limit
        for limit in range(1, 60)
        for mailboxes in range(1, 30)
    )


def test_a_mailboxs_room_is_its_due_jobs_below_its_concurrency_and_its_accounts_part() -> None:
    assert claim_room(100, due=500, free=4, accounts=1) == 4  # the providers' concurrency
    assert claim_room(100, due=3, free=20, accounts=1) == 3  # all it has due
    assert claim_room(100, due=500, free=10**6, accounts=1) == 100  # the whole claim
    assert claim_room(100, due=500, free=10**6, accounts=3) == 34  # one account's part
    assert claim_room(8, due=5, free=0, accounts=2) == 0
    assert claim_room(8, due=5, free=-1, accounts=2) == 0  # over its limit (lowered since)


def test_a_claim_locks_the_mailboxes_it_can_fill_and_no_more() -> None:
    assert mailboxes_to_lock(100, [100, 100, 100]) == 1
    assert mailboxes_to_lock(100, [4] * 30) == 25  # the providers' concurrency: 25 of 30
    assert mailboxes_to_lock(10, [4, 1, 4, 4]) == 4  # 4 + 1 + 4 is 9: one more
    assert mailboxes_to_lock(10, [1, 1, 1]) == 3  # all of them, and the claim is not full
    assert mailboxes_to_lock(2, [0, 0, 0, 0]) == 2  # never more mailboxes than the limit
    assert mailboxes_to_lock(8, []) == 0


def test_mailbox_values_override_the_provider_defaults() -> None:
    mailbox = Mailbox(provider="google", max_concurrency=None, rate_per_minute=None)
    mailbox.daily_recipient_cap = 500  # a consumer Gmail account
    assert effective_limits(mailbox, LimitDefaults()) == MailboxLimits(4, None, 500)
    microsoft = Mailbox(provider="microsoft", max_concurrency=2, rate_per_minute=None)
    microsoft.daily_recipient_cap = None
    assert effective_limits(microsoft, LimitDefaults()) == MailboxLimits(2, 30, 10_000)


def test_allowance_is_the_tighter_of_concurrency_and_rate() -> None:
    limits = MailboxLimits(4, 30, None)
    assert allowance(limits, MailboxUsage(running=1)) == 3
    assert allowance(limits, MailboxUsage(running=0, claimed_last_minute=29)) == 1
    assert allowance(limits, MailboxUsage(running=5)) == 0


def test_deferral_lasts_until_the_oldest_claim_leaves_the_window() -> None:
    limits = MailboxLimits(4, 3, 10)
    first = NOW - dt.timedelta(seconds=40)
    usage = MailboxUsage(claimed_last_minute=3, oldest_claim_last_minute=first)
    assert deferral(limits, usage, NOW) == Deferral(first + dt.timedelta(minutes=1), "rate_limit")
    day = MailboxUsage(recipients_last_day=10, oldest_claim_last_day=first)
    assert deferral(limits, day, NOW) == Deferral(first + dt.timedelta(days=1), "daily_cap")
    assert deferral(limits, MailboxUsage(claimed_last_minute=2), NOW) is None


def test_daily_cap_takes_jobs_in_order_while_their_recipients_fit() -> None:
    limits = MailboxLimits(4, None, 10)
    assert within_daily_cap(limits, MailboxUsage(recipients_last_day=4), [3, 3, 1]) == 2
    assert within_daily_cap(MailboxLimits(4, None, None), MailboxUsage(), [900, 900]) == 2


def test_recipients_count_to_cc_and_bcc() -> None:
    one = {"address": "a@example.com"}
    assert recipient_count({"to": [one, one], "cc": [one], "bcc": [one]}) == 4
    assert recipient_count({"to": []}) == 1
