"""``/v1/jobs`` over a real socket, the real intake and a real SQLite database."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest

from mailbox_worker.clock import utcnow
from mailbox_worker.states import JobState
from tests.integration.api_harness import (
    MESSAGE_LIMIT,
    Answer,
    RunningApi,
    job_request,
)


async def enqueue(
    api: RunningApi, key: str, body: Any, idempotency_key: str | None = None
) -> Answer:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
    return await api.call("POST", "/v1/jobs", key=key, json_body=body, headers=headers)


# -- enqueue --------------------------------------------------------------------------------


async def test_an_accepted_job_is_committed_before_the_answer(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    account_id, key, mailbox_id = caller

    answer = await enqueue(api, key, job_request(mailbox_id))

    assert answer.status == 202, answer.body
    job = answer.json()
    assert answer.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert (job["mailbox_id"], job["mode"], job["state"]) == (mailbox_id, "send", JobState.QUEUED)
    assert job["reference"] == "INV-2024-0042"
    assert job["message_id"] == f"<{job['id']}@contoso.example>"
    assert job["created_at"].endswith("Z")
    assert job["last_error"] is None
    assert job["provider"] == {"message_id": None, "draft_id": None, "web_link": None}
    stored = await api.jobs.get(job["id"], account_id)
    assert stored is not None and stored.state == JobState.QUEUED
    payload = await api.jobs.payload(job["id"])
    assert payload is not None and payload["subject"] == "Invoice INV-2024-0042"


async def test_the_answer_does_not_echo_the_message(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, mailbox_id = caller
    answer = await enqueue(api, key, job_request(mailbox_id))
    assert answer.status == 202
    assert "message" not in answer.json()
    for content in (b'Invoice INV-2024-0042"', b"fabrikam", b"JVBERi0xLjQK", b"attached"):
        assert content not in answer.body


async def test_a_replayed_idempotency_key_answers_the_first_job(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, mailbox_id = caller
    body = job_request(mailbox_id)

    first = await enqueue(api, key, body, idempotency_key="invoice-42")
    again = await enqueue(api, key, body, idempotency_key="invoice-42")

    assert (first.status, again.status) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert again.json() == first.json()


async def test_a_replay_answers_the_first_job_even_after_the_mailbox_was_disconnected(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, mailbox_id = caller
    body = job_request(mailbox_id)
    first = await enqueue(api, key, body, idempotency_key="invoice-42")
    assert await api.mailboxes.set_state(
        mailbox_id, "disconnected", "disconnected_by_admin", expected=["connected"]
    )
    again = await enqueue(api, key, body, idempotency_key="invoice-42")
    assert (first.status, again.status) == (202, 200), again.body
    assert again.json()["id"] == first.json()["id"]
    fresh = await enqueue(api, key, body, idempotency_key="invoice-43")
    assert (fresh.status, fresh.error_code) == (409, "mailbox_disconnected")


async def test_a_replay_answers_the_first_job_even_after_its_deadline_passed(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, mailbox_id = caller
    deadline = utcnow() + dt.timedelta(hours=1)
    body = {**job_request(mailbox_id), "deadline": deadline.strftime("%Y-%m-%dT%H:%M:%SZ")}
    first = await enqueue(api, key, body, idempotency_key="invoice-42")
    api.clock.advance(dt.timedelta(hours=2))
    again = await enqueue(api, key, body, idempotency_key="invoice-42")
    assert (first.status, again.status) == (202, 200), again.body
    fresh = await enqueue(api, key, body, idempotency_key="invoice-43")
    assert (fresh.status, fresh.error_code) == (400, "invalid_deadline")


@pytest.mark.parametrize("deadline", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
async def test_a_deadline_out_of_range_is_invalid_not_an_error(
    api: RunningApi, caller: tuple[str, str, str], deadline: str
) -> None:
    _, key, mailbox_id = caller
    answer = await enqueue(api, key, {**job_request(mailbox_id), "deadline": deadline})
    assert (answer.status, answer.error_code) == (400, "invalid_deadline"), answer.body


async def test_a_reused_idempotency_key_with_another_body_is_a_conflict(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, mailbox_id = caller
    await enqueue(api, key, job_request(mailbox_id), idempotency_key="invoice-42")

    answer = await enqueue(
        api, key, job_request(mailbox_id, subject="Another invoice"), idempotency_key="invoice-42"
    )

    assert (answer.status, answer.error_code) == (409, "idempotency_key_reused")


async def test_idempotency_keys_are_per_account(api: RunningApi) -> None:
    jobs = []
    for name in ("Contoso", "Northwind"):
        account_id, key = await api.account_with_key(name=name)
        mailbox = await api.connected_mailbox(account_id)
        answer = await enqueue(api, key, job_request(mailbox.id), idempotency_key="same")
        assert answer.status == 202
        jobs.append(answer.json()["id"])
    assert jobs[0] != jobs[1]


async def test_without_an_idempotency_key_each_request_is_a_new_job(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, mailbox_id = caller
    first = await enqueue(api, key, job_request(mailbox_id))
    second = await enqueue(api, key, job_request(mailbox_id))
    assert (first.status, second.status) == (202, 202)
    assert first.json()["id"] != second.json()["id"]


async def test_a_deadline_is_answered_in_utc(api: RunningApi, caller: tuple[str, str, str]) -> None:
    _, key, mailbox_id = caller
    body = {**job_request(mailbox_id), "deadline": "2100-01-01T12:00:00+02:00"}
    answer = await enqueue(api, key, body)
    assert answer.status == 202, answer.body
    assert answer.json()["deadline"] == "2100-01-01T10:00:00.000Z"


# -- malformed or refused requests: a stable 4xx each, never a 5xx ---------------------------


def _without(body: dict[str, Any], field: str) -> dict[str, Any]:
    message = dict(body["message"])
    del message[field]
    return {**body, "message": message}


def _attachment(
    content_base64: str = "eA==", filename: str = "a.pdf", content_type: str = "application/pdf"
) -> list[dict[str, str]]:
    return [{"filename": filename, "content_type": content_type, "content_base64": content_base64}]


def _to(address: str, **extra: str) -> dict[str, Any]:
    return {"to": [{"address": address, **extra}]}


# How to spoil the valid message, the code answered (always with 400) and the field named.
MALFORMED = [
    pytest.param(_to("not-an-address"), "invalid_address", "message.to[0].address", id="address"),
    pytest.param(_to("a@b@fabrikam.example"), "invalid_address", "message.to[0].address", id="2@"),
    # An unclosed domain literal made the standard library's parser raise: a 500 before.
    pytest.param(_to("a@[x"), "invalid_address", "message.to[0].address", id="a@[x"),
    pytest.param(
        _to("a@fabrikam.example\r\nBcc: x@evil.example"),
        "invalid_address",
        "message.to[0].address",
        id="CRLF in address",
    ),
    # Past RFC 5321's 254 octets as the message would carry it, the domain in IDNA form: 31
    # characters, 271 octets in that form (tests/unit/test_addresses.py has the edges).
    pytest.param(
        _to("a@" + ".".join(["㍿"] * 15)),
        "invalid_address",
        "message.to[0].address",
        id="over 254 octets in IDNA form",
    ),
    pytest.param(
        _to("a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 62),
        "invalid_address",
        "message.to[0].address",
        id="255 ASCII octets",
    ),
    pytest.param(
        _to("Ann <ann@fabrikam.example>"),
        "invalid_address",
        "message.to[0].address",
        id="display name in address",
    ),
    pytest.param(
        {"subject": "Invoice\r\nBcc: victim@example.com"},
        "invalid_request",
        "message.subject",
        id="CRLF in subject",
    ),
    pytest.param(
        _to("a@fabrikam.example", name="A\nB"), "invalid_request", "message.to[0].name", id="LF"
    ),
    pytest.param({"to": []}, "invalid_request", "message.to", id="no recipient"),
    pytest.param({"subject": ""}, "invalid_request", "message.subject", id="empty subject"),
    pytest.param({"priority": 1}, "invalid_request", "message.priority", id="unknown field"),
    pytest.param({"text": "a\u0000b"}, "invalid_request", "message.text", id="NUL in text"),
    pytest.param(
        {"attachments": _attachment("%%%not base64%%%")},
        "invalid_attachment",
        "message.attachments[0].content_base64",
        id="not base64",
    ),
    pytest.param(
        {"attachments": _attachment("JVBERi0xLjQ")},
        "invalid_attachment",
        "message.attachments[0].content_base64",
        id="truncated base64",
    ),
    pytest.param(
        {"attachments": _attachment(filename="../../etc/passwd")},
        "invalid_request",
        "message.attachments[0].filename",
        id="path in filename",
    ),
    pytest.param(
        {"attachments": _attachment(content_type="text/plain; charset=utf-8")},
        "invalid_request",
        "message.attachments[0].content_type",
        id="media type parameters",
    ),
    pytest.param(
        {"attachments": _attachment() * 21},
        "invalid_request",
        "message.attachments",
        id="21 attachments",
    ),
]


@pytest.mark.parametrize(("change", "code", "field"), MALFORMED)
async def test_a_malformed_message_is_refused_naming_the_field(
    api: RunningApi,
    caller: tuple[str, str, str],
    change: dict[str, Any],
    code: str,
    field: str,
) -> None:
    _, key, mailbox_id = caller

    answer = await enqueue(api, key, job_request(mailbox_id, **change))

    assert (answer.status, answer.error_code) == (400, code), answer.body
    error = answer.json()["error"]
    assert field in error["message"]
    assert field in [detail["field"] for detail in error["details"]]


async def test_a_message_without_text_or_html_is_missing_its_body(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, mailbox_id = caller
    answer = await enqueue(api, key, _without(job_request(mailbox_id), "text"))
    assert (answer.status, answer.error_code) == (400, "missing_body")
    assert answer.json()["error"]["details"][0]["field"] == "message"

    html_only = _without(job_request(mailbox_id, html="<p>Invoice</p>"), "text")
    assert (await enqueue(api, key, html_only)).status == 202


async def test_unknown_fields_are_named_and_refused(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, mailbox_id = caller
    body = {**job_request(mailbox_id), "urgency": 1, "callback": "https://x.example"}

    answer = await enqueue(api, key, body)

    assert (answer.status, answer.error_code) == (400, "invalid_request")
    details = answer.json()["error"]["details"]
    assert {detail["field"] for detail in details} == {"urgency", "callback"}
    assert b"https://x.example" not in answer.body  # names, never values


async def test_several_problems_are_all_detailed(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, _ = caller
    body = {"mode": "fax", "message": {"to": [{"address": "nope"}], "subject": 7}}

    answer = await enqueue(api, key, body)

    assert (answer.status, answer.error_code) == (400, "invalid_request")
    fields = {detail["field"]: detail["code"] for detail in answer.json()["error"]["details"]}
    assert fields == {
        "mailbox_id": "invalid_request",
        "mode": "invalid_request",
        "message": "missing_body",
        "message.to[0].address": "invalid_address",
        "message.subject": "invalid_request",
    }


async def test_an_unknown_mailbox_is_not_found(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, _ = caller
    answer = await enqueue(api, key, job_request("mbx_does_not_exist"))
    assert (answer.status, answer.error_code) == (404, "mailbox_not_found")


async def test_another_accounts_mailbox_answers_as_an_unknown_one(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, _ = caller
    other_account, _ = await api.account_with_key(name="Northwind")
    theirs = await api.connected_mailbox(other_account)

    foreign = await enqueue(api, key, job_request(theirs.id))
    unknown = await enqueue(api, key, job_request("mbx_does_not_exist"))

    assert (foreign.status, foreign.body_but_request_id) == (
        unknown.status,
        unknown.body_but_request_id,
    )
    assert sum((await api.queue.count_by_state()).values()) == 0


async def test_a_mailbox_waiting_for_consent_cannot_take_jobs(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    account_id, key, _ = caller
    pending = await api.mailboxes.create(account_id, "microsoft", ["send"], actor="test")
    answer = await enqueue(api, key, job_request(pending.id))
    assert (answer.status, answer.error_code) == (409, "mailbox_not_connected")


async def test_a_message_over_the_providers_limit_is_too_large(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, mailbox_id = caller
    content = base64.b64encode(b"%PDF" + b"\0" * MESSAGE_LIMIT).decode()

    answer = await enqueue(api, key, job_request(mailbox_id, attachments=_attachment(content)))

    assert (answer.status, answer.error_code) == (413, "message_too_large")
    assert str(MESSAGE_LIMIT) in answer.json()["error"]["message"]


async def test_a_deadline_in_the_past_is_refused(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, mailbox_id = caller
    past = {**job_request(mailbox_id), "deadline": "2001-01-01T00:00:00Z"}
    not_a_date = {**job_request(mailbox_id), "deadline": "tomorrow"}
    for body in (past, not_a_date):
        answer = await enqueue(api, key, body)
        assert (answer.status, answer.error_code) == (400, "invalid_deadline"), answer.body


async def test_from_must_be_the_mailboxs_own_address(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, mailbox_id = caller
    spoofed = job_request(mailbox_id, **{"from": {"address": "ceo@contoso.example"}})
    named = job_request(
        mailbox_id, **{"from": {"address": "billing@contoso.example", "name": "Contoso Billing"}}
    )
    answer = await enqueue(api, key, spoofed)
    assert (answer.status, answer.error_code) == (400, "from_mismatch")
    assert (await enqueue(api, key, named)).status == 202


@pytest.mark.parametrize(
    "value", ["", "x" * 201, "caf\u00e9", "tab\there"], ids=["empty", "long", "non-ascii", "tab"]
)
async def test_a_malformed_idempotency_key_is_refused(
    api: RunningApi, caller: tuple[str, str, str], value: str
) -> None:
    _, key, mailbox_id = caller
    answer = await enqueue(api, key, job_request(mailbox_id), idempotency_key=value)
    assert (answer.status, answer.error_code) == (400, "invalid_idempotency_key"), answer.body
    assert sum((await api.queue.count_by_state()).values()) == 0


# -- read and cancel ------------------------------------------------------------------------


async def test_a_job_is_read_with_its_events(api: RunningApi, caller: tuple[str, str, str]) -> None:
    _, key, mailbox_id = caller
    created = (await enqueue(api, key, job_request(mailbox_id))).json()

    answer = await api.call("GET", f"/v1/jobs/{created['id']}", key=key)

    assert answer.status == 200
    job = answer.json()
    assert {k: v for k, v in job.items() if k != "events"} == created
    assert [(e["kind"], e["from_state"], e["to_state"], e["code"]) for e in job["events"]] == [
        ("state", None, JobState.QUEUED, "enqueued")
    ]
    assert dt.datetime.fromisoformat(job["events"][0]["at"]).tzinfo is not None


async def test_a_queued_job_is_cancelled_once_and_stays_cancelled(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, mailbox_id = caller
    job_id = (await enqueue(api, key, job_request(mailbox_id))).json()["id"]

    first = await api.call("POST", f"/v1/jobs/{job_id}/cancel", key=key)
    again = await api.call("POST", f"/v1/jobs/{job_id}/cancel", key=key)

    assert (first.status, first.json()["state"]) == (200, JobState.CANCELLED)
    assert (again.status, again.json()["state"]) == (200, JobState.CANCELLED)
    assert "events" not in first.json()
    assert first.json()["finished_at"] is not None


async def test_a_running_job_cannot_be_cancelled(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, mailbox_id = caller
    job_id = (await enqueue(api, key, job_request(mailbox_id))).json()["id"]
    claimed = await api.queue.claim("worker-1", 1, dt.timedelta(minutes=1))
    assert [c.job.id for c in claimed] == [job_id]

    answer = await api.call("POST", f"/v1/jobs/{job_id}/cancel", key=key)

    assert (answer.status, answer.error_code) == (409, "job_not_cancellable")


async def test_another_accounts_job_is_not_found(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, mailbox_id = caller
    job_id = (await enqueue(api, key, job_request(mailbox_id))).json()["id"]
    _, other_key = await api.account_with_key(name="Northwind")

    for method, path in (("GET", f"/v1/jobs/{job_id}"), ("POST", f"/v1/jobs/{job_id}/cancel")):
        theirs = await api.call(method, path, key=other_key)
        unknown = await api.call(method, path.replace(job_id, "job_unknown"), key=other_key)
        assert (theirs.status, theirs.error_code) == (404, "job_not_found")
        assert theirs.body_but_request_id == unknown.body_but_request_id
    state = await api.jobs.get(job_id)
    assert state is not None and state.state == JobState.QUEUED


async def test_a_job_id_of_impossible_characters_is_an_unknown_route(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, _ = caller
    answer = await api.call("GET", "/v1/jobs/job%20one", key=key)
    assert (answer.status, answer.error_code) == (404, "not_found")


@pytest.mark.parametrize("content_type", ["message/rfc822", "multipart/mixed", "Message/partial"])
async def test_a_composite_attachment_type_is_refused(
    api: RunningApi, caller: tuple[str, str, str], content_type: str
) -> None:
    """message/* and multipart/* parts cannot be base64-encoded (RFC 2046): the content
    would be lost, so they are refused rather than sent broken."""
    _, key, mailbox_id = caller
    body = job_request(mailbox_id)
    body["message"]["attachments"][0]["content_type"] = content_type
    answer = await enqueue(api, key, body)
    assert (answer.status, answer.error_code) == (400, "invalid_request"), answer.body
    assert "message/*" in answer.json()["error"]["message"]


async def test_send_at_schedules_the_job_and_priority_orders_its_mailbox(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, mailbox_id = caller
    send_at = utcnow() + dt.timedelta(hours=3)
    scheduled = await enqueue(
        api,
        key,
        {**job_request(mailbox_id), "send_at": send_at.strftime("%Y-%m-%dT%H:%M:%SZ")},
    )
    low = await enqueue(api, key, {**job_request(mailbox_id), "priority": -5})
    high = await enqueue(api, key, {**job_request(mailbox_id), "priority": 7})
    assert (scheduled.status, low.status, high.status) == (202, 202, 202), scheduled.body
    answer = scheduled.json()
    assert answer["send_at"] == send_at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert (answer["priority"], low.json()["priority"], high.json()["priority"]) == (0, -5, 7)
    assert low.json()["send_at"] is None

    claimed = await api.queue.claim("w", 1, dt.timedelta(minutes=1))
    assert [item.job.id for item in claimed] == [high.json()["id"]]
    claimed = await api.queue.claim("w", 10, dt.timedelta(minutes=1))
    assert [item.job.id for item in claimed] == [low.json()["id"]]  # the scheduled one waits
    api.clock.advance(dt.timedelta(hours=3, seconds=1))
    claimed = await api.queue.claim("w", 10, dt.timedelta(minutes=1))
    assert [item.job.id for item in claimed] == [scheduled.json()["id"]]


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"send_at": "2001-01-01T00:00:00Z"}, "invalid_send_at"),
        ({"send_at": "next week"}, "invalid_send_at"),
        ({"send_at": "2100-01-01T12:00:00"}, "invalid_send_at"),
        (
            {"send_at": "2100-01-02T00:00:00Z", "deadline": "2100-01-01T00:00:00Z"},
            "invalid_send_at",
        ),
        ({"priority": 11}, "invalid_request"),
        ({"priority": "high"}, "invalid_request"),
    ],
    ids=["past", "not-a-date", "no-offset", "after-deadline", "priority-range", "priority-type"],
)
async def test_bad_send_at_or_priority_is_refused(
    api: RunningApi, caller: tuple[str, str, str], fields: dict[str, object], code: str
) -> None:
    _, key, mailbox_id = caller
    answer = await enqueue(api, key, {**job_request(mailbox_id), **fields})
    assert (answer.status, answer.error_code) == (400, code), answer.body
    assert sum((await api.queue.count_by_state()).values()) == 0


async def test_a_job_is_made_for_its_mailboxs_state_when_it_commits(
    api: RunningApi, caller: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mailbox needed consent when the request came in; the consent completes before the
    jobs' transaction: the job is ``queued``, not ``held`` (the soak once found one left
    ``held`` on a connected mailbox for good, when the intake read the mailbox before that
    transaction)."""
    _, key, mailbox_id = caller
    assert await api.mailboxes.set_state(
        mailbox_id, "reauth_required", "invalid_grant", expected=["connected"]
    )
    enqueue_jobs = api.app.jobs.enqueue_for_mailboxes

    async def consent_lands_first(
        account_id: str, mailbox_ids: Any, prepare: Any, **options: Any
    ) -> Any:
        assert await api.mailboxes.set_state(
            mailbox_id, "connected", None, expected=["reauth_required"]
        )
        return await enqueue_jobs(account_id, mailbox_ids, prepare, **options)

    monkeypatch.setattr(api.app.jobs, "enqueue_for_mailboxes", consent_lands_first)
    answer = await enqueue(api, key, job_request(mailbox_id))
    assert (answer.status, answer.json()["state"]) == (202, "queued"), answer.body
    stored = await api.app.jobs.get(answer.json()["id"])
    assert stored is not None and stored.state == "queued"


async def test_a_job_for_a_mailbox_disconnected_meanwhile_is_refused(
    api: RunningApi, caller: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key, mailbox_id = caller
    enqueue_jobs = api.app.jobs.enqueue_for_mailboxes

    async def disconnect_lands_first(
        account_id: str, mailbox_ids: Any, prepare: Any, **options: Any
    ) -> Any:
        assert await api.mailboxes.set_state(
            mailbox_id, "disconnected", "disconnected_by_admin", expected=["connected"]
        )
        return await enqueue_jobs(account_id, mailbox_ids, prepare, **options)

    monkeypatch.setattr(api.app.jobs, "enqueue_for_mailboxes", disconnect_lands_first)
    answer = await enqueue(api, key, job_request(mailbox_id))
    assert (answer.status, answer.error_code) == (409, "mailbox_disconnected"), answer.body
    assert sum((await api.queue.count_by_state()).values()) == 0  # no job left behind
