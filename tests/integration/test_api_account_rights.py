"""``/v1/account/export|pause|resume|erase`` over HTTP: answers as the document says, the
erasure's confirmation, and a key that is gone with its account."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailbox_worker.db.accounts import PERMISSIONS

from .api_harness import RunningApi, running_api


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[RunningApi]:
    async with running_api(tmp_path) as running:
        yield running


async def test_pause_and_resume_answer_the_pause(api: RunningApi) -> None:
    account_id, key = await api.account_with_key()

    paused = await api.call("POST", "/v1/account/pause", key=key)
    resumed = await api.call("POST", "/v1/account/resume", key=key)

    assert paused.status == 200
    assert paused.json()["account_id"] == account_id
    assert paused.json()["paused"] is True
    assert paused.json()["paused_at"].endswith("Z")
    assert resumed.status == 200
    assert resumed.json() == {"account_id": account_id, "paused": False, "paused_at": None}


async def test_export_answers_the_document_without_the_key(api: RunningApi) -> None:
    account_id, key = await api.account_with_key()
    mailbox = await api.connected_mailbox(account_id)

    answer = await api.call("GET", "/v1/account/export", key=key)

    assert answer.status == 200
    assert answer.headers["Cache-Control"] == "no-store"
    document = answer.json()
    assert document["format"] == "mailbox-worker.account-export.v1"
    assert [m["id"] for m in document["mailboxes"]] == [mailbox.id]
    assert key.encode() not in answer.body
    assert b"secret_sha256" not in answer.body


@pytest.mark.parametrize("confirm", ["", "acc_someone_else"])
async def test_erasure_needs_the_account_id_as_confirmation(api: RunningApi, confirm: str) -> None:
    account_id, key = await api.account_with_key()

    answer = await api.call("POST", "/v1/account/erase", key=key, json_body={"confirm": confirm})

    assert (answer.status, answer.error_code) == (409, "confirmation_mismatch")
    assert await api.accounts.get_account(account_id) is not None


async def test_an_erased_account_and_its_keys_are_gone(api: RunningApi) -> None:
    account_id, key = await api.account_with_key()
    other_key = await api.key_for(account_id, PERMISSIONS)
    await api.connected_mailbox(account_id)

    answer = await api.call("POST", "/v1/account/erase", key=key, json_body={"confirm": account_id})

    assert answer.status == 200
    report = answer.json()
    assert report["account_id"] == account_id
    assert report["mailboxes_disconnected"] == 1
    assert report["deleted"]["api_keys"] == 2
    assert report["deleted"]["accounts"] == 1
    assert await api.accounts.get_account(account_id) is None
    again = await api.call("GET", "/v1/account/export", key=other_key)
    assert (again.status, again.error_code) == (401, "unauthenticated")
