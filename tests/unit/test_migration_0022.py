"""Migration 0022 makes its claim function from 0021's text (``_changed``): the name, two
variables, the candidates' rooms (their due jobs counted once locked), and the usage read of
statement 2, whose daily window comes from ``mailbox_claim_hours``. A migration is history, so
that text must never change; if an earlier migration's file were edited, 0022's function would
change with it without a word, and this test is what says so."""

from __future__ import annotations

import hashlib

import pytest

from mailbox_worker.db.migrations import load_version as migration

CREATED_0022 = "d0ab4f0ae70eee1fa5c437237ebbda916985e5ccf19dbc5058a979c3a7b51a6d"
"""The SHA-256 of 0022's ``CREATE FUNCTION`` as released."""


def test_0022s_function_is_the_one_released() -> None:
    created = migration("0022_claims_by_hour.py").CREATE
    assert hashlib.sha256(created.encode()).hexdigest() == CREATED_0022


def test_0022s_function_is_0021s_with_its_name_variables_rooms_and_usage_read() -> None:
    module = migration("0022_claims_by_hour.py")
    old = migration("0021_claim_from_queued.py").CREATE
    new = module.CREATE
    restored = new.replace("mailbox_worker_claim_0022(", "mailbox_worker_claim_0021(")
    for before, after in (
        (module._DECLARED, module._DECLARED_NOW),
        (module._ROOM, module._ROOM_NOW),
        (module._LOCKED, module._LOCKED_NOW),
        (module._USED, module._USED_NOW),
    ):
        assert new.count(after) == 1
        restored = restored.replace(after, before)
    assert restored == old
    # the daily window's whole hours come from the table, no longer from every job of the day
    assert "FROM mailbox_claim_hours AS h" in new
    assert "FILTER (WHERE job.claimed_at > p_day_ago)" not in new


def test_0022_refuses_a_0021_text_without_the_read_it_changes() -> None:
    module = migration("0022_claims_by_hour.py")
    with pytest.raises(RuntimeError):
        module._changed(
            "CREATE FUNCTION mailbox_worker_claim_0021() ...", "mailbox_worker_claim_0021"
        )
