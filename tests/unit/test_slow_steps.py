"""The budget of slow steps the API's checks may take on the event loop
(``policy/slow_steps.py``), and the steps that spend it: a new internationalised domain's
encoding and the standard library's parse of an address outside the common form."""

from __future__ import annotations

import functools
import uuid

import pytest

from mailbox_worker.policy import addresses, domains, slow_steps
from mailbox_worker.policy.slow_steps import SlowWorkDeferred


def test_a_budget_allows_its_steps_then_defers_every_later_one() -> None:
    with slow_steps.within_budget(2):
        slow_steps.spend()
        slow_steps.spend()
        for _ in range(2):
            with pytest.raises(SlowWorkDeferred):
                slow_steps.spend()
    for _ in range(100):  # outside a budget, nothing is counted
        slow_steps.spend()


def test_a_budget_within_another_is_its_own_and_the_outer_one_comes_back() -> None:
    with slow_steps.within_budget(1):
        with slow_steps.within_budget(0), pytest.raises(SlowWorkDeferred):
            slow_steps.spend()
        slow_steps.spend()
        with pytest.raises(SlowWorkDeferred):
            slow_steps.spend()


def test_a_new_domain_and_an_irregular_address_spend_a_step_a_plain_address_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Caches answer without a step: a domain or an address checked before costs nothing."""
    monkeypatch.setattr(
        domains, "_spelling", functools.lru_cache(16)(domains._spelling.__wrapped__)
    )
    monkeypatch.setattr(
        addresses, "_parses_back", functools.lru_cache(16)(addresses._parses_back.__wrapped__)
    )
    new = f"{uuid.uuid4().hex[:8]}.bücher.example"
    with slow_steps.within_budget(0):
        assert addresses.is_email_address("billing@example.com")
        assert domains.ascii_domain("example.com") == "example.com"
        with pytest.raises(SlowWorkDeferred):
            domains.ascii_domain(new)
        with pytest.raises(SlowWorkDeferred):
            addresses.is_email_address('"a b"@example.com')
    kept: dict[str, str] = {}
    with domains.spellings_kept(kept):
        assert domains.ascii_domain(new).endswith(".xn--bcher-kva.example")
        assert addresses.is_email_address('"a b"@example.com')
    assert list(kept) == [new]  # spelled once the budget was no more, and kept
    with slow_steps.within_budget(0):
        assert domains.ascii_domain(new).endswith(".xn--bcher-kva.example")
        assert addresses.is_email_address('"a b"@example.com')
