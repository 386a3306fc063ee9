"""Migration 0020 makes its claim function from 0019's text (``_changed``): the name, one
setting, three variables and statement 1. A migration is history, so that text must never
change; if 0018's or 0019's file were edited, 0020's function would change with it without a
word, and this test is what says so."""

from __future__ import annotations

import hashlib

import pytest

from mailbox_worker.db.migrations import load_version as migration

CREATED_0020 = "b9be8760e1c636f9f29d501de2d0bf78ee3f4aa3e6b4f3d0e9287e9d4c7e2fb3"
"""The SHA-256 of 0020's ``CREATE FUNCTION`` as released."""


def test_0020s_function_is_the_one_released() -> None:
    created = migration("0020_claim_in_turn.py").CREATE
    assert hashlib.sha256(created.encode()).hexdigest() == CREATED_0020


def test_0020s_function_is_0019s_with_its_name_settings_variables_and_statement_1() -> None:
    module = migration("0020_claim_in_turn.py")
    old = migration("0019_claim_lookup_once.py").CREATE
    new = module.CREATE
    old_start, old_end = old.index(module._STATEMENT_1_START), old.index(module._STATEMENT_1_END)
    new_start = new.index(module.STATEMENT_1)
    new_end = new_start + len(module.STATEMENT_1)
    assert new_start == new.index(module._STATEMENT_1_END) - len(module.STATEMENT_1)
    restored = new[:new_start] + old[old_start:old_end] + new[new_end:]
    restored = restored.replace("mailbox_worker_claim_0020(", "mailbox_worker_claim_0019(")
    restored = restored.replace(module._DECLARED_NOW, module._DECLARED)
    restored = restored.replace(module._SETTINGS_NOW, module._SETTINGS)
    assert restored == old
    assert "SET jit = off\n" in new and "jit" not in old
    assert "FOR NO KEY UPDATE SKIP LOCKED" in module.STATEMENT_1
    assert "FOR NO KEY UPDATE OF m SKIP LOCKED" not in new  # 0019's lock of them all is gone


def test_0020_refuses_a_0019_text_without_the_statement_it_changes() -> None:
    module = migration("0020_claim_in_turn.py")
    with pytest.raises(RuntimeError):
        module._changed(
            "CREATE FUNCTION mailbox_worker_claim_0019() ...", "mailbox_worker_claim_0019"
        )
