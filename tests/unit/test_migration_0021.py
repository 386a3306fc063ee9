"""Migration 0021 makes its claim function from 0020's text (``_changed``): the name and
statement 1's candidates, found from the queued jobs. A migration is history, so that text
must never change; if 0018's, 0019's or 0020's file were edited, 0021's function would change
with it without a word, and this test is what says so."""

from __future__ import annotations

import hashlib

import pytest

from mailbox_worker.db.migrations import load_version as migration

CREATED_0021 = "56fc2eefd3e8b85f497d0e53daad96b9822dd4804b9130d64af58684247b0adc"
"""The SHA-256 of 0021's ``CREATE FUNCTION`` as released."""


def test_0021s_function_is_the_one_released() -> None:
    created = migration("0021_claim_from_queued.py").CREATE
    assert hashlib.sha256(created.encode()).hexdigest() == CREATED_0021


def test_0021s_function_is_0020s_with_its_name_and_candidates() -> None:
    module = migration("0021_claim_from_queued.py")
    old = migration("0020_claim_in_turn.py").CREATE
    new = module.CREATE
    restored = new.replace("mailbox_worker_claim_0021(", "mailbox_worker_claim_0020(")
    restored = restored.replace(module._COMMENT_NOW, module._COMMENT)
    restored = restored.replace(module._WAITING_NOW, module._WAITING)
    assert restored == old
    # the candidates come from the skip scan of queued jobs, each mailbox looked up by key
    assert "WITH RECURSIVE queued" in new and "WHERE mb.id = queued.mailbox_id" in new
    assert "FROM mailboxes AS mb\n                    WHERE mb.state" not in new


def test_0021_refuses_a_0020_text_without_the_query_it_changes() -> None:
    module = migration("0021_claim_from_queued.py")
    with pytest.raises(RuntimeError):
        module._changed(
            "CREATE FUNCTION mailbox_worker_claim_0020() ...", "mailbox_worker_claim_0020"
        )
