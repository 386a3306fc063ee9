"""The sandbox's one clock: both simulators read it, and advancing it expires what it should."""

from __future__ import annotations

import pytest

from mailbox_worker.sandbox.state import SandboxState


def test_both_simulators_read_one_clock_that_only_moves_forward() -> None:
    state = SandboxState()
    before = state.now()

    state.advance(3600)

    assert state.google.clock is state.clock
    assert state.now() >= before + 3600
    with pytest.raises(ValueError, match="only moves forward"):
        state.advance(-1)


def test_a_google_access_token_expires_when_its_lifetime_has_passed() -> None:
    state = SandboxState()
    grant, _ = state.google.consent("invoices@fabrikam.example", "sandbox-google-client", [])
    value = state.google.issue_access_token(grant, [], lifetime=60)
    assert state.google.access_token_valid(value) is not None

    state.advance(61)

    assert state.google.access_token_valid(value) is None
