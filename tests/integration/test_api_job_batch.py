"""``POST /v1/job-batches`` over a real socket, the real intake and a real SQLite database:
each item answered as ``POST /v1/jobs`` would answer it alone."""

from __future__ import annotations

import base64
import functools
import json
import threading
from typing import Any

import idna
import pytest
from aiohttp import web
from yarl import URL

from mailbox_worker import lanes
from mailbox_worker.api import parsing
from mailbox_worker.api.document import ApiDocument
from mailbox_worker.api.errors import client_gone
from mailbox_worker.jobs import intake as intake_module
from mailbox_worker.jobs import mime
from mailbox_worker.policy import addresses, domains
from mailbox_worker.policy.slow_steps import (
    ADDRESSES_ON_THE_LOOP,
    BYTES_PARSED_ON_THE_LOOP,
    SLOW_STEPS_ON_THE_LOOP,
)
from mailbox_worker.states import JobState
from tests import raw_http
from tests.integration.api_harness import MAILBOX_ADDRESS, Answer, RunningApi, job_request
from tests.lanes_harness import occupy, until


async def batch(api: RunningApi, key: str, items: list[Any]) -> Answer:
    return await api.call("POST", "/v1/job-batches", key=key, json_body={"items": items})


async def test_each_item_gets_its_own_answer(api: RunningApi, caller: tuple[str, str, str]) -> None:
    _, key, mailbox_id = caller
    single = await api.call(
        "POST",
        "/v1/jobs",
        key=key,
        json_body=job_request(mailbox_id),
        headers={"Idempotency-Key": "inv-1"},
    )
    assert single.status == 202, single.body
    bad_address = job_request(mailbox_id, to=[{"address": "not an address"}])
    items = [
        {**job_request(mailbox_id), "idempotency_key": "inv-1"},  # the single request again
        {**job_request(mailbox_id, subject="other"), "idempotency_key": "inv-1"},  # reused key
        {**bad_address, "idempotency_key": "inv-2"},
        job_request("mbx_" + "0" * 32),  # no such mailbox
        {**job_request(mailbox_id, subject="new"), "idempotency_key": "inv-3"},
        job_request(mailbox_id, subject="no key"),
        {**job_request(mailbox_id, subject="new"), "idempotency_key": "inv-3"},  # inv-3 again
        {"mailbox_id": mailbox_id},  # not a job request
    ]

    answer = await batch(api, key, items)

    assert answer.status == 200, answer.body
    results = answer.json()["items"]
    assert [result["index"] for result in results] == list(range(len(items)))
    assert [result["status"] for result in results] == [
        "existing",
        "error",
        "error",
        "error",
        "created",
        "created",
        "existing",
        "error",
    ]
    assert results[0]["job"]["id"] == single.json()["id"]
    assert results[1]["error"]["code"] == "idempotency_key_reused"
    assert results[2]["error"]["code"] == "invalid_address"
    assert results[3]["error"]["code"] == "mailbox_not_found"
    assert results[6]["job"]["id"] == results[4]["job"]["id"]
    assert results[7]["error"]["code"] == "invalid_request"
    assert {detail["field"] for detail in results[7]["error"]["details"]} == {
        "items[7].mode",
        "items[7].message",
    }
    for result in (results[4], results[5]):
        job = (await api.call("GET", f"/v1/jobs/{result['job']['id']}", key=key)).json()
        assert job["state"] == JobState.QUEUED
    counts = await api.queue.count_by_state()
    assert {state: n for state, n in counts.items() if n} == {JobState.QUEUED: 3}


async def test_an_item_replays_a_single_request_and_the_reverse(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, mailbox_id = caller
    first = await batch(api, key, [{**job_request(mailbox_id), "idempotency_key": "inv-9"}])
    assert first.json()["items"][0]["status"] == "created"
    again = await api.call(
        "POST",
        "/v1/jobs",
        key=key,
        json_body=job_request(mailbox_id),
        headers={"Idempotency-Key": "inv-9"},
    )
    assert (again.status, again.json()["id"]) == (200, first.json()["items"][0]["job"]["id"])


@pytest.mark.parametrize(
    "body",
    [{"items": []}, {"items": [{}] * 1001}, {"jobs": []}, [], {"items": {}}],
    ids=["empty", "too-many", "unknown-field", "not-an-object", "not-a-list"],
)
async def test_what_is_not_a_batch_fails_whole(
    api: RunningApi, caller: tuple[str, str, str], body: Any
) -> None:
    _, key, _ = caller
    answer = await api.call("POST", "/v1/job-batches", key=key, json_body=body)
    assert (answer.status, answer.error_code) == (400, "invalid_request"), answer.body
    assert sum((await api.queue.count_by_state()).values()) == 0


async def test_a_batch_needs_the_jobs_write_permission(api: RunningApi) -> None:
    account_id, key = await api.account_with_key(frozenset({"jobs:read"}))
    mailbox = await api.connected_mailbox(account_id)
    answer = await batch(api, key, [job_request(mailbox.id)])
    assert (answer.status, answer.error_code) == (403, "forbidden")
    assert sum((await api.queue.count_by_state()).values()) == 0


async def test_items_of_another_accounts_mailbox_are_not_found(
    api: RunningApi, caller: tuple[str, str, str]
) -> None:
    _, key, mailbox_id = caller
    other_account, _ = await api.account_with_key(name="Globex")
    other = await api.connected_mailbox(other_account)
    answer = await batch(api, key, [job_request(other.id), job_request(mailbox_id)])
    statuses = [
        (item["status"], item.get("error", {}).get("code")) for item in answer.json()["items"]
    ]
    assert statuses == [("error", "mailbox_not_found"), ("created", None)]


def _new_domains(count: int, tag: str) -> list[str]:
    """``count`` internationalised domains no other test spells (one letter each of ``tag``'s
    own, several labels)."""
    letters = "äöüéèàçñ"
    return [
        ".".join([tag, *(letters[(n >> (3 * k)) % 8] for k in range(4))]) + ".example"
        for n in range(count)
    ]


def _spy_on_the_encoder(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every IDNA encoding from now on, as ``(domain, thread name)``; the encoder's cache keeps
    one domain only, as if the request held more new ones than it keeps."""
    monkeypatch.setattr(domains, "_spelling", functools.lru_cache(1)(domains._spelling.__wrapped__))
    encode = idna.encode
    calls: list[tuple[str, str]] = []

    def spy(domain: str, **options: Any) -> bytes:
        calls.append((domain, threading.current_thread().name))
        spelled: bytes = encode(domain, **options)
        return spelled

    monkeypatch.setattr(idna, "encode", spy)
    return calls


async def test_a_batch_of_many_new_domains_is_checked_beside_the_loop_and_spelled_once(
    api: RunningApi, caller: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Encoding a new internationalised domain takes 0.3 to 1 ms: a batch of thousands of them
    held the event loop, and every other request with it, for seconds (docs/performance.md,
    "The addresses' checks"). The checks on the loop stop after ``SLOW_STEPS_ON_THE_LOOP``
    slow steps and go on in a thread; each domain is spelled once for the API's checks and the
    intake's together, even where they are more than the encoder's cache keeps."""
    _, key, mailbox_id = caller
    spelled = _new_domains(3 * SLOW_STEPS_ON_THE_LOOP, "batch")
    items = [
        job_request(mailbox_id, to=[{"address": f"a@{domain}"} for domain in spelled[n::3]])
        for n in range(3)
    ]
    # Addresses checked before are answered by their own cache, without the encoder: their
    # domains must still be kept for the intake.
    assert all(addresses.is_email_address(f"a@{domain}") for domain in spelled)
    calls = _spy_on_the_encoder(monkeypatch)
    on_the_loop = threading.current_thread().name  # the test's loop serves the API

    answer = await batch(api, key, items)

    assert answer.status == 200, answer.body
    assert [result["status"] for result in answer.json()["items"]] == ["created"] * 3
    assert sorted(domain for domain, _ in calls) == sorted(spelled)  # each once
    threads = [thread for _, thread in calls]
    assert set(threads) == {on_the_loop, "costly-checks_0"}
    assert threads.count(on_the_loop) <= SLOW_STEPS_ON_THE_LOOP
    # The thread of its own, not the default executor's, whose threads refresh access tokens.


async def test_a_request_of_few_new_domains_is_checked_on_the_loop(
    api: RunningApi, caller: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request within the budget is checked on the loop alone, and its domains are still
    spelled once."""
    _, key, mailbox_id = caller
    spelled = _new_domains(SLOW_STEPS_ON_THE_LOOP // 4, "few")
    calls = _spy_on_the_encoder(monkeypatch)
    on_the_loop = threading.current_thread().name
    body = job_request(mailbox_id, to=[{"address": f"a@{domain}"} for domain in spelled])

    answer = await api.call("POST", "/v1/jobs", key=key, json_body=body)

    assert answer.status == 202, answer.body
    assert sorted(domain for domain, _ in calls) == sorted(spelled)
    assert {thread for _, thread in calls} == {on_the_loop}


async def test_a_refused_body_is_explained_beside_the_loop(
    api: RunningApi, caller: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compiled validator accepts a body on the loop; naming the failures of one it
    refuses takes jsonschema several times as long (184 ms for one bad item among 500
    invoices), so that is done in the costly checks' thread. The answers are the same."""
    _, key, mailbox_id = caller
    explained: list[str] = []
    validate_items = ApiDocument.validate_items

    def spy(self: ApiDocument, pointer: str, instance: Any, field: str) -> Any:
        explained.append(threading.current_thread().name)
        return validate_items(self, pointer, instance, field)

    monkeypatch.setattr(ApiDocument, "validate_items", spy)
    good = [job_request(mailbox_id)]
    assert (await batch(api, key, good)).status == 200
    assert explained == []  # accepted on the loop, never explained

    bad = [*good, job_request(mailbox_id, to=[{"address": "not an address"}])]
    answer = await batch(api, key, bad)

    assert [item["status"] for item in answer.json()["items"]] == ["created", "error"]
    assert answer.json()["items"][1]["error"]["code"] == "invalid_address"
    assert explained == ["costly-checks_0"]
    single = await api.call("POST", "/v1/jobs", key=key, json_body={"mailbox_id": mailbox_id})
    assert single.status == 400, single.body
    assert single.json()["error"]["code"] == "invalid_request"


@pytest.fixture
def narrow_lane(monkeypatch: pytest.MonkeyPatch) -> lanes.Lane:
    """The costly checks' lane, admitting one work at a time."""
    lane = lanes.Lane("costly-checks", admits_bytes=1)
    monkeypatch.setattr(lanes, "CHECKS", lane)
    return lane


async def test_a_costly_request_finding_the_lane_full_is_answered_503_server_busy(
    api: RunningApi, caller: tuple[str, str, str], narrow_lane: lanes.Lane
) -> None:
    """Each request waiting for the costly checks holds its parsed body, while the loop reads
    others: past what the lane admits it is refused at once, with ``Retry-After``, and nothing
    is done. Requests checked on the loop are not concerned."""
    _, key, mailbox_id = caller
    costly = [
        job_request(mailbox_id, to=[{"address": f"a@{domain}"} for domain in spelled])
        for spelled in [_new_domains(2 * SLOW_STEPS_ON_THE_LOOP, "busy")]
    ]
    gate = threading.Event()
    held = await occupy(narrow_lane, gate)

    try:
        refused = await batch(api, key, costly)
        plain = await batch(api, key, [job_request(mailbox_id)])
    finally:
        gate.set()

    assert refused.status == 503, refused.body
    assert refused.error_code == "server_busy"
    assert int(refused.headers["Retry-After"]) >= 1
    assert plain.status == 200, plain.body
    assert await held
    jobs = await api.call("GET", "/v1/jobs", key=key)
    assert len(jobs.json()["items"]) == 1  # the refused batch left nothing behind
    accepted = await batch(api, key, costly)
    assert accepted.status == 200, accepted.body
    assert [item["status"] for item in accepted.json()["items"]] == ["created"]


async def test_a_request_whose_client_hung_up_while_it_waited_for_the_lane_is_not_checked(
    api: RunningApi,
    caller: tuple[str, str, str],
    monkeypatch: pytest.MonkeyPatch,
    narrow_lane: lanes.Lane,
) -> None:
    """A client that gives up on a costly request does not keep the ones behind it waiting
    for checks no one will read."""
    _, key, mailbox_id = caller
    narrow_lane.admits_bytes = None
    waiting: list[web.Request] = []
    beside_the_loop = parsing._beside_the_loop

    async def spy(request: web.Request, work: Any, size: int) -> Any:
        waiting.append(request)
        return await beside_the_loop(request, work, size)

    monkeypatch.setattr(parsing, "_beside_the_loop", spy)
    spelled = _new_domains(2 * SLOW_STEPS_ON_THE_LOOP, "gone")
    body = json.dumps(
        {"items": [job_request(mailbox_id, to=[{"address": f"a@{d}"} for d in spelled])]}
    ).encode()
    gate = threading.Event()
    held = await occupy(narrow_lane, gate)
    calls = _spy_on_the_encoder(monkeypatch)
    port = URL(api.base_url).port
    assert port is not None

    try:
        async with raw_http.connection(port) as (_, writer):
            writer.write(raw_http.post_head("/v1/job-batches", key, length=len(body)) + body)
            await writer.drain()
            await until(lambda: bool(waiting))
        await until(lambda: client_gone(waiting[0]))
    finally:
        gate.set()
    assert await held
    await until(lambda: not narrow_lane.held)

    assert [thread for _, thread in calls if thread.startswith("costly-checks")] == []
    assert len(calls) <= SLOW_STEPS_ON_THE_LOOP  # the loop's share, before it deferred
    jobs = await api.call("GET", "/v1/jobs", key=key)
    assert jobs.json()["items"] == []


def _spy_on_the_folding(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every header the email package folds from now on, as ``(header, thread name)``."""
    fold = mime._modern_fold
    calls: list[tuple[str, str]] = []

    def spy(name: str, value: Any) -> str:
        calls.append((name, threading.current_thread().name))
        return fold(name, value)

    monkeypatch.setattr(mime, "_modern_fold", spy)
    return calls


async def test_a_batch_of_lists_folded_slowly_is_sized_beside_the_loop(
    api: RunningApi, caller: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A list holding one quoted address is folded by the email package, about 100 µs an
    address, and the intake's exact size bound folded it in the jobs' transaction, on the
    loop: a 16 MB batch of such lists would have held it for a minute and more. Past the
    budget of slow steps they are folded in the costly checks' lane before the transaction,
    and the answers are the same."""
    _, key, mailbox_id = caller
    quoted = {"address": '"a b"@fabrikam.example'}
    lists = [[quoted, *({"address": f"ap{n}@fabrikam.example"} for n in range(40))]]
    items = [job_request(mailbox_id, to=to, cc=to) for to in lists * 2]
    calls = _spy_on_the_folding(monkeypatch)
    on_the_loop = threading.current_thread().name

    answer = await batch(api, key, items)

    assert answer.status == 200, answer.body
    assert [item["status"] for item in answer.json()["items"]] == ["created"] * 2
    folded = [(header, thread) for header, thread in calls if header in ("To", "Cc")]
    assert sorted(header for header, _ in folded) == ["Cc", "Cc", "To", "To"]
    assert {thread for _, thread in folded} == {"costly-checks_0"}
    assert on_the_loop not in {thread for _, thread in calls}


async def test_a_request_of_few_lists_folded_slowly_is_sized_on_the_loop(
    api: RunningApi, caller: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key, mailbox_id = caller
    to = [{"address": '"a b"@fabrikam.example'}, {"address": "ap@fabrikam.example"}]
    calls = _spy_on_the_folding(monkeypatch)
    on_the_loop = threading.current_thread().name

    answer = await api.call("POST", "/v1/jobs", key=key, json_body=job_request(mailbox_id, to=to))

    assert answer.status == 202, answer.body
    assert calls == [("To", on_the_loop)]


async def test_a_list_that_cannot_be_folded_fails_its_item_alone(
    api: RunningApi, caller: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Folding beside the loop keeps the builder's error for its item's turn in the
    transaction: that item is answered ``invalid_message``, the others are created."""
    _, key, mailbox_id = caller
    quoted = [{"address": f'"a b{n}"@fabrikam.example'} for n in range(SLOW_STEPS_ON_THE_LOOP)]
    fold = mime._modern_fold

    def failing(name: str, value: Any) -> str:
        if name == "Cc":
            raise ValueError("cannot fold")
        return fold(name, value)

    monkeypatch.setattr(mime, "_modern_fold", failing)
    items = [job_request(mailbox_id, to=quoted), job_request(mailbox_id, to=quoted, cc=quoted)]

    answer = await batch(api, key, items)

    assert answer.status == 200, answer.body
    results = answer.json()["items"]
    assert [item["status"] for item in results] == ["created", "error"]
    assert results[1]["error"]["code"] == "invalid_message"


def _quoted_lists(mailbox_id: str, items: int, per_list: int) -> list[dict[str, Any]]:
    """Items whose four lists each hold one quoted address (parsed once, then cached: the
    API's checks stay on the loop) among plain ones: the lists the email package folds."""
    lists = {
        field: [
            {"address": f'"a b {field}"@fabrikam.example'},
            *({"address": f"ap{n}@fabrikam.example"} for n in range(per_list - 1)),
        ]
        for field in ("to", "cc", "bcc", "reply_to")
    }
    return [job_request(mailbox_id, **lists) for _ in range(items)]


async def test_the_folding_asks_the_lane_for_the_requests_bytes(
    api: RunningApi,
    caller: tuple[str, str, str],
    narrow_lane: lanes.Lane,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lists are folded holding the request's parsed body, addresses included: a lane
    that cannot hold the body's bytes refuses it, 503, and nothing is done."""
    _, key, mailbox_id = caller
    items = _quoted_lists(mailbox_id, 2, 20)
    body = json.dumps({"items": items}).encode()
    narrow_lane.admits_bytes = len(body)  # with the work below: one byte short
    gate = threading.Event()
    held = await occupy(narrow_lane, gate)
    worked_out = intake_module._worked_out
    refusals: list[str] = []

    async def spy(submissions: Any) -> Any:
        try:
            return await worked_out(submissions)
        except lanes.LaneFull as full:
            refusals.append(str(full))
            raise

    monkeypatch.setattr(intake_module, "_worked_out", spy)

    try:
        refused = await api.call(
            "POST",
            "/v1/job-batches",
            key=key,
            data=body,
            headers={"Content-Type": "application/json"},
        )
    finally:
        gate.set()

    assert await held
    assert refused.status == 503, refused.body
    assert refused.error_code == "server_busy"
    assert refusals == ["the costly-checks lane is full"]  # the intake's, not the checks'
    assert (await api.call("GET", "/v1/jobs", key=key)).json()["items"] == []


@pytest.mark.parametrize(
    "lists",
    [
        pytest.param({"to": [{"address": "ap@fabrikam.example", "name": "📧" * 200}]}, id="long"),
        pytest.param(
            {
                "from": {"address": MAILBOX_ADDRESS, "name": "📧" * 200},
                **{
                    field: [{"address": f"ap{n}@fabrikam.example"} for n in range(500)]
                    for field in ("to", "cc", "bcc", "reply_to")
                },
            },
            id="many",
        ),
    ],
)
async def test_lists_costly_to_size_for_another_reason_are_folded_beside_the_loop(
    api: RunningApi,
    caller: tuple[str, str, str],
    monkeypatch: pytest.MonkeyPatch,
    lists: dict[str, Any],
) -> None:
    """An address too long for a line (a name of 200 emoji is one encoded word of over 1,000
    characters) is folded by the email package in 15 to 35 ms; and plain addresses cost a few
    µs each to size, 0.8 s for the 400,000 a 16 MB batch holds. Either way the intake's size
    checks run on what the costly checks' lane folded."""
    _, key, mailbox_id = caller
    folded_in: list[str] = []
    fold = mime.folded_address_lists

    def spy(payload: Any) -> dict[str, str]:
        folded_in.append(threading.current_thread().name)
        return fold(payload)

    monkeypatch.setattr(intake_module, "folded_address_lists", spy)
    on_the_loop = threading.current_thread().name
    addresses = mime._addresses
    written_on_the_loop: list[str] = []

    def addresses_spy(name: str, items: Any) -> str:
        if threading.current_thread().name == on_the_loop and name != "From":
            written_on_the_loop.append(name)
        return addresses(name, items)

    monkeypatch.setattr(mime, "_addresses", addresses_spy)
    threads = _spy_on_threads(monkeypatch)
    bound = mime.message_size_bound
    bounds: list[str] = []

    def bound_spy(*args: Any, **kwargs: Any) -> int:
        bounds.append(threading.current_thread().name)
        return bound(*args, **kwargs)

    monkeypatch.setattr(intake_module, "message_size_bound", bound_spy)

    answer = await batch(api, key, [job_request(mailbox_id, **lists)] * 2)

    assert answer.status == 200, answer.body
    assert [item["status"] for item in answer.json()["items"]] == ["created"] * 2
    assert folded_in == ["costly-checks_0"] * 2
    assert written_on_the_loop == []
    assert bounds == []  # far below the limit: the ceiling, counting the folded lists, says so
    # The stored JSON and the digest too; a body of many addresses is checked there as well.
    assert threads["dumps_message"] == ["costly-checks_0"] * 2
    assert threads["_request_digest"] == ["costly-checks_0"] * 2
    many = mime.addresses_in(lists) * 2 > ADDRESSES_ON_THE_LOOP
    assert threads["accepts"] == ["costly-checks_0" if many else on_the_loop]


def _spy_on_threads(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The threads the intake's digests and stored JSON and the validator's acceptance run
    in from now on, by function name."""
    threads: dict[str, list[str]] = {"dumps_message": [], "_request_digest": [], "accepts": []}

    def spying(name: str, function: Any) -> Any:
        def spy(*args: Any, **kwargs: Any) -> Any:
            threads[name].append(threading.current_thread().name)
            return function(*args, **kwargs)

        return spy

    for name in ("dumps_message", "_request_digest"):
        monkeypatch.setattr(intake_module, name, spying(name, getattr(intake_module, name)))
    monkeypatch.setattr(ApiDocument, "accepts", spying("accepts", ApiDocument.accepts))
    return threads


async def test_a_plain_request_is_worked_out_on_the_loop(
    api: RunningApi, caller: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key, mailbox_id = caller
    threads = _spy_on_threads(monkeypatch)
    on_the_loop = threading.current_thread().name
    to = [{"address": f"ap{n}@fabrikam.example"} for n in range(400)]

    answer = await batch(api, key, [job_request(mailbox_id, to=to, cc=to)] * 2)

    assert answer.status == 200, answer.body
    assert threads == {
        "dumps_message": [on_the_loop] * 2,
        "_request_digest": [on_the_loop] * 2,
        "accepts": [on_the_loop],
    }


async def test_address_keys_written_with_escapes_are_counted_too(
    api: RunningApi, caller: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``"addr\\u0065ss"`` is the key ``address`` to JSON: a body of many such keys is checked
    beside the loop as one with plain keys is."""
    _, key, mailbox_id = caller
    to = [{"address": f"ap{n}@fabrikam.example"} for n in range(500)]
    items = [job_request(mailbox_id, to=to, cc=to, bcc=to)] * 2
    body = json.dumps({"items": items}).replace('"address"', '"addr\\u0065ss"').encode()
    assert body.count(b'"address"') == 0
    threads = _spy_on_threads(monkeypatch)

    answer = await api.call(
        "POST", "/v1/job-batches", key=key, data=body, headers={"Content-Type": "application/json"}
    )

    assert answer.status == 200, answer.body
    assert [item["status"] for item in answer.json()["items"]] == ["created"] * 2
    assert threads["accepts"] == ["costly-checks_0"]


def _spy_on_parsing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The threads the body's parse runs in from now on."""
    threads: list[str] = []
    parse = parsing.parse_json

    def spy(raw: bytes) -> Any:
        threads.append(threading.current_thread().name)
        return parse(raw)

    monkeypatch.setattr(parsing, "parse_json", spy)
    return threads


def _with_pdf(mailbox_id: str, size: int) -> dict[str, Any]:
    """A job request whose body is about ``size`` bytes, nearly all of it its PDF's base64."""
    attachment = {
        "filename": "INV-2024-0042.pdf",
        "content_type": "application/pdf",
        "content_base64": base64.b64encode(b"%PDF-1.4\n" + bytes(size * 3 // 4)).decode(),
    }
    return job_request(mailbox_id, attachments=[attachment])


async def test_a_large_body_is_parsed_and_checked_beside_the_loop_in_one_turn(
    api: RunningApi, caller: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The JSON parser holds the loop while it parses, and a body of the densest JSON takes
    about 25 ms a MB (a float's check is Python): a body larger than
    ``BYTES_PARSED_ON_THE_LOOP`` is parsed in the costly checks' thread, and checked there in
    the same turn. An ordinary invoice, its PDF 100 KB, is parsed and checked on the loop; a
    batch of two invoices of 150 KB PDFs, beside it."""
    _, key, mailbox_id = caller
    parsed_in = _spy_on_parsing(monkeypatch)
    threads = _spy_on_threads(monkeypatch)
    on_the_loop = threading.current_thread().name
    ordinary = _with_pdf(mailbox_id, 100 * 1024)
    large = [_with_pdf(mailbox_id, 150 * 1024) for _ in range(2)]
    assert len(json.dumps(ordinary)) < BYTES_PARSED_ON_THE_LOOP < len(json.dumps(large))

    single = await api.call("POST", "/v1/jobs", key=key, json_body=ordinary)
    answer = await batch(api, key, large)

    assert single.status == 202, single.body
    assert answer.status == 200, answer.body
    assert [item["status"] for item in answer.json()["items"]] == ["created"] * 2
    assert parsed_in == [on_the_loop, "costly-checks_0"]
    assert threads["accepts"] == [on_the_loop, "costly-checks_0"]


@pytest.mark.parametrize(
    ("filler", "code"),
    [
        pytest.param("0.5", "invalid_request", id="floats the schema refuses"),
        pytest.param("1e400", "invalid_json", id="a number beyond the double range"),
        pytest.param("0.5,", "invalid_json", id="not JSON"),
    ],
)
async def test_a_large_body_refused_beside_the_loop_is_answered_as_on_it(
    api: RunningApi, caller: tuple[str, str, str], filler: str, code: str
) -> None:
    """What the parse or the checks refuse in the lane's thread is answered 400 with its
    code, as on the loop, and nothing is stored."""
    _, key, mailbox_id = caller
    numbers = ",".join([filler] * (BYTES_PARSED_ON_THE_LOOP // len(filler) + 1))
    body = json.dumps(job_request(mailbox_id)).replace('"INV-2024-0042"', f"[{numbers}]", 1)
    assert len(body) > BYTES_PARSED_ON_THE_LOOP

    answer = await api.call(
        "POST",
        "/v1/jobs",
        key=key,
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )

    assert answer.status == 400, answer.body
    assert answer.json()["error"]["code"] == code
    assert b"Traceback" not in answer.body
    listed = await api.call("GET", f"/v1/jobs?mailbox_id={mailbox_id}", key=key)
    assert listed.status == 200, listed.body
    assert listed.json()["items"] == []
