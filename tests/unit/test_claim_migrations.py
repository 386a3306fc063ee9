"""Each migration from 0019 on makes the claim function from its predecessor's text
(``_changed``), changing only what its docstring says. A migration is history, so that text
must never change: its SHA-256 as released is pinned here, and if an earlier migration's file
were edited, a later function would change with it without a word; this is what says so. Each
is also shown to be its predecessor's with only its own changes, and to refuse a predecessor's
text that no longer holds what it replaces."""

from __future__ import annotations

import hashlib

import pytest

from mailbox_worker.db.migrations import load_version as migration

RELEASED = {
    "0019_claim_lookup_once.py": "818f4988ccf0d91d30b2117a1f4b0f5336454e9414935b08e47ba6ee91a12041",
    "0020_claim_in_turn.py": "b9be8760e1c636f9f29d501de2d0bf78ee3f4aa3e6b4f3d0e9287e9d4c7e2fb3",
    "0021_claim_from_queued.py": "56fc2eefd3e8b85f497d0e53daad96b9822dd4804b9130d64af58684247b0adc",
    "0022_claims_by_hour.py": "d0ab4f0ae70eee1fa5c437237ebbda916985e5ccf19dbc5058a979c3a7b51a6d",
    "0023_claim_states_as_values.py": (
        "32082d073358454aa92d4baa288c07a75095c83ebcc0962d92de8761106e723e"
    ),
}
"""The SHA-256 of each one's ``CREATE FUNCTION`` as released."""
BEFORE = {
    "0019_claim_lookup_once.py": "mailbox_worker_claim_0018",
    "0020_claim_in_turn.py": "mailbox_worker_claim_0019",
    "0021_claim_from_queued.py": "mailbox_worker_claim_0020",
    "0022_claims_by_hour.py": "mailbox_worker_claim_0021",
    "0023_claim_states_as_values.py": "mailbox_worker_claim_0022",
}
"""The function each one's is made from."""


@pytest.mark.parametrize("filename", RELEASED)
def test_each_claim_function_is_the_one_released(filename: str) -> None:
    created = migration(filename).CREATE
    assert hashlib.sha256(created.encode()).hexdigest() == RELEASED[filename]


@pytest.mark.parametrize("filename", BEFORE)
def test_each_refuses_a_text_without_what_it_changes(filename: str) -> None:
    old_name = BEFORE[filename]
    with pytest.raises(RuntimeError):
        migration(filename)._changed(f"CREATE FUNCTION {old_name}() ...", old_name)


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


def test_0023s_function_is_0022s_with_its_name_two_variables_and_five_comparisons() -> None:
    module = migration("0023_claim_states_as_values.py")
    old = migration("0022_claims_by_hour.py").CREATE
    new = module.CREATE
    restored = new.replace("mailbox_worker_claim_0023(", "mailbox_worker_claim_0022(")
    for before, after in module._REPLACED.items():
        assert new.count(after) == 1
        restored = restored.replace(after, before)
    assert restored == old
    # a mailbox's own jobs by value; the skip scan of the partial index keeps its constant
    assert new.count("= v_running") == 2 and new.count("= v_queued") == 2
    assert new.count("j.state = 'queued'") == old.count("j.state = 'queued'") - 1
    assert "WHERE j.state = 'queued' AND j.mailbox_id > queued.mailbox_id" in new
    assert "WHERE jobs.id = chosen.id AND (jobs.state || '') = 'queued'" in new
