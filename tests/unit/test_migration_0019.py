"""Migration 0019 makes its claim function from 0018's text (``_changed``): the name and one
clause. A migration is history, so that text must never change; if 0018's file were edited,
0019's function would change with it without a word, and this test is what says so."""

from __future__ import annotations

import hashlib

import pytest

from mailbox_worker.db.migrations import load_version as migration

CREATED_0019 = "818f4988ccf0d91d30b2117a1f4b0f5336454e9414935b08e47ba6ee91a12041"
"""The SHA-256 of 0019's ``CREATE FUNCTION`` as released."""


def test_0019s_function_is_the_one_released() -> None:
    created = migration("0019_claim_lookup_once.py").CREATE
    assert hashlib.sha256(created.encode()).hexdigest() == CREATED_0019


def test_0019s_function_is_0018s_with_its_name_and_one_clause() -> None:
    old = migration("0018_claim_function.py").CREATE
    new = migration("0019_claim_lookup_once.py").CREATE
    assert new.count("OFFSET 0") == 1 and "OFFSET 0" not in old
    restored = new.replace("mailbox_worker_claim_0019(", "mailbox_worker_claim_0018(")
    restored = restored.replace(
        "                OFFSET 0  -- a plan of its own: oldest_due looked up once per mailbox\n",
        "",
    )
    assert restored == old


def test_0019_refuses_a_0018_text_without_the_clause_it_changes() -> None:
    module = migration("0019_claim_lookup_once.py")
    with pytest.raises(RuntimeError):
        module._changed(
            "CREATE FUNCTION mailbox_worker_claim_0018() ...", "mailbox_worker_claim_0018"
        )
