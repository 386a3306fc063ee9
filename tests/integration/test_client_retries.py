"""The client against a real HTTP server that plays the daemon's failure answers.

The server (aiohttp, on a port of its own) answers each request from a script and records
what it received; the client's waits go through a recording ``sleep`` and its clock through a
fake, so what the client waited is asserted exactly and nothing waits for real.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mailbox_worker.client import (
    ApiError,
    MailboxWorkerClient,
    Message,
    OutcomeTimeout,
    RateLimited,
    RetryPolicy,
    TransportError,
    Unavailable,
)
from tests.ports import free_port

API_KEY = "mw_test_key_0123456789"
MESSAGE: Message = {"to": [{"address": "ap@fabrikam.example"}], "subject": "Invoice", "text": "."}


def job(state: str = "queued", job_id: str = "job_1") -> dict[str, Any]:
    return {
        "id": job_id,
        "mailbox_id": "mbx_1",
        "mode": "send",
        "state": state,
        "reference": None,
        "message_id": f"<{job_id}@mailbox-worker>",
        "attempts": 0,
        "created_at": "2026-12-05T12:00:00Z",
        "updated_at": "2026-12-05T12:00:00Z",
        "finished_at": None,
        "deadline": None,
        "send_at": None,
        "priority": 0,
        "last_error": None,
        "provider": {"message_id": None, "draft_id": None, "web_link": None},
    }


def error(status: int, code: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"code": code, "message": f"{code} happened"}}
    return web.json_response(body, status=status, headers=headers)


@dataclass
class Script:
    """The answers to give, in order (the last one repeats), and the requests received."""

    answers: list[Callable[[web.Request], web.Response]] = field(default_factory=list)
    received: list[web.Request] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)
    base_url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.received.append(request)
        raw = await request.read()
        self.bodies.append(json.loads(raw) if raw else None)
        answer = self.answers[min(len(self.received), len(self.answers)) - 1]
        return answer(request)


class FakeTime:
    """``sleep`` that records each wait and moves ``clock`` on by it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture
async def script() -> AsyncIterator[Script]:
    recorded = Script()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorded.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    recorded.base_url = str(server.make_url(""))
    yield recorded
    await server.close()


@pytest.fixture
def time() -> FakeTime:
    return FakeTime()


def client(script: Script, time: FakeTime, **options: Any) -> MailboxWorkerClient:
    return MailboxWorkerClient(
        script.base_url,
        API_KEY,
        sleep=time.sleep,
        clock=time.clock,
        random=lambda: 1.0,
        **options,
    )


async def test_a_503_with_retry_after_is_waited_out_and_the_same_key_sent_again(
    script: Script, time: FakeTime
) -> None:
    script.answers = [
        lambda _: error(503, "database_unavailable", {"Retry-After": "7"}),
        lambda _: web.json_response(job(), status=202),
    ]
    async with client(script, time) as api:
        created = await api.enqueue(mailbox_id="mbx_1", mode="send", message=MESSAGE)
    assert created["id"] == "job_1"
    assert time.waits == [7.0]
    keys = [request.headers["Idempotency-Key"] for request in script.received]
    assert len(keys) == 2
    assert keys[0] == keys[1]
    assert len(keys[0]) == 36  # a uuid4, made up by the client
    assert (
        script.bodies[0]
        == script.bodies[1]
        == {
            "mailbox_id": "mbx_1",
            "mode": "send",
            "message": MESSAGE,
        }
    )
    assert all(r.headers["Authorization"] == f"Bearer {API_KEY}" for r in script.received)


async def test_each_call_gets_its_own_key_unless_one_is_given(
    script: Script, time: FakeTime
) -> None:
    script.answers = [lambda _: web.json_response(job(), status=202)]
    async with client(script, time) as api:
        await api.enqueue(mailbox_id="mbx_1", mode="send", message=MESSAGE)
        await api.enqueue(mailbox_id="mbx_1", mode="send", message=MESSAGE)
        await api.enqueue(
            mailbox_id="mbx_1", mode="send", message=MESSAGE, idempotency_key="INV-42"
        )
    keys = [request.headers["Idempotency-Key"] for request in script.received]
    assert keys[0] != keys[1]
    assert keys[2] == "INV-42"


async def test_a_429_honours_a_retry_after_date(script: Script, time: FakeTime) -> None:
    # An HTTP date in the past means "now": the client retries without waiting.
    past = "Wed, 21 Oct 2015 07:28:00 GMT"
    script.answers = [
        lambda _: error(429, "rate_limited", {"Retry-After": past}),
        lambda _: web.json_response(job("sent")),
    ]
    async with client(script, time) as api:
        assert (await api.get_job("job_1"))["state"] == "sent"
    assert time.waits == [0.0]
    assert len(script.received) == 2


async def test_without_retry_after_the_backoff_grows_and_then_the_error_is_raised(
    script: Script, time: FakeTime
) -> None:
    script.answers = [lambda _: error(503, "too_many_connections")]
    policy = RetryPolicy(max_retries=3, backoff_base=0.5, backoff_cap=30)
    async with client(script, time, retry_policy=policy) as api:
        with pytest.raises(Unavailable) as raised:
            await api.list_mailboxes()
    assert (raised.value.status, raised.value.code) == (503, "too_many_connections")
    assert time.waits == [0.5, 1.0, 2.0]  # random() is 1.0: the whole of each ceiling
    assert len(script.received) == 4


async def test_a_retry_after_beyond_the_policy_is_not_waited_out(
    script: Script, time: FakeTime
) -> None:
    script.answers = [lambda _: error(429, "rate_limited", {"Retry-After": "3600"})]
    async with client(script, time) as api:
        with pytest.raises(RateLimited) as raised:
            await api.get_job("job_1")
    assert raised.value.retry_after == 3600.0
    assert time.waits == []
    assert len(script.received) == 1


async def test_another_4xx_is_never_retried_and_its_error_is_decoded(
    script: Script, time: FakeTime
) -> None:
    body = {
        "error": {
            "code": "validation_failed",
            "message": "the request is not valid",
            "details": [
                {"field": "message.to[0].address", "code": "invalid_address", "message": "bad"}
            ],
        }
    }
    script.answers = [
        lambda _: web.json_response(body, status=400, headers={"X-Request-Id": "req-77"})
    ]
    async with client(script, time) as api:
        with pytest.raises(ApiError) as raised:
            await api.enqueue(mailbox_id="mbx_1", mode="send", message=MESSAGE)
    failure = raised.value
    assert (failure.status, failure.code, failure.request_id) == (
        400,
        "validation_failed",
        "req-77",
    )
    assert failure.details[0]["field"] == "message.to[0].address"
    assert API_KEY not in str(failure)
    assert len(script.received) == 1
    assert time.waits == []


async def test_an_answer_that_is_not_the_apis_error_body_is_still_an_api_error(
    script: Script, time: FakeTime
) -> None:
    script.answers = [lambda _: web.Response(status=502, text="<html>Bad gateway</html>")]
    async with client(script, time) as api:
        with pytest.raises(ApiError) as raised:
            await api.get_job("job_1")
    assert (raised.value.status, raised.value.code) == (502, "unexpected_response")


def drop_connection(request: web.Request) -> web.Response:
    assert request.transport is not None
    request.transport.close()
    return web.Response(status=200)


async def test_a_dropped_connection_is_retried_for_a_get(script: Script, time: FakeTime) -> None:
    script.answers = [drop_connection]
    async with client(script, time, retry_policy=RetryPolicy(max_retries=2)) as api:
        with pytest.raises(TransportError, match="no answer"):
            await api.get_job("job_1")
    assert time.waits == [0.5, 1.0]
    # aiohttp itself may send an idempotent request once more on a fresh connection
    assert len(script.received) >= 3


async def test_the_get_succeeds_once_the_connection_holds(script: Script, time: FakeTime) -> None:
    script.answers = [drop_connection] * 3 + [lambda _: web.json_response(job("sent"))]
    async with client(script, time) as api:
        assert (await api.get_job("job_1"))["state"] == "sent"
    assert time.waits[0] == 0.5


async def test_a_refused_connection_is_retried_for_an_enqueue(time: FakeTime) -> None:
    api = MailboxWorkerClient(
        f"http://127.0.0.1:{free_port()}",
        API_KEY,
        retry_policy=RetryPolicy(max_retries=3),
        sleep=time.sleep,
        random=lambda: 0.0,
    )
    async with api:
        with pytest.raises(TransportError) as raised:
            await api.enqueue(mailbox_id="mbx_1", mode="send", message=MESSAGE)
    assert time.waits == [0.25, 0.5, 1.0]
    assert API_KEY not in str(raised.value)


async def test_a_dropped_connection_is_not_retried_for_a_cancel(
    script: Script, time: FakeTime
) -> None:
    # The cancel may have been done: sending it again is the caller's decision.
    script.answers = [drop_connection, lambda _: web.json_response(job("cancelled"))]
    async with client(script, time) as api:
        with pytest.raises(TransportError):
            await api.cancel_job("job_1")
    assert len(script.received) == 1
    assert time.waits == []


async def test_wait_for_outcome_polls_until_a_final_state_with_a_growing_interval(
    script: Script, time: FakeTime
) -> None:
    states = iter(["queued", "queued", "running", "running", "sent"])
    script.answers = [lambda _: web.json_response(job(next(states)))]
    async with client(script, time) as api:
        done = await api.wait_for_outcome("job_1", poll_interval=1.0, max_poll_interval=2.0)
    assert done["state"] == "sent"
    assert time.waits == [1.0, 1.5, 2.0, 2.0]
    assert {request.path for request in script.received} == {"/v1/jobs/job_1"}


@pytest.mark.parametrize("state", ["held", "unknown", "failed"])
async def test_wait_for_outcome_returns_a_state_that_needs_a_person(
    script: Script, time: FakeTime, state: str
) -> None:
    states = iter(["running", state])
    script.answers = [lambda _: web.json_response(job(next(states)))]
    async with client(script, time) as api:
        assert (await api.wait_for_outcome("job_1"))["state"] == state
    assert len(script.received) == 2


async def test_wait_for_outcome_gives_up_after_its_timeout(script: Script, time: FakeTime) -> None:
    script.answers = [lambda _: web.json_response(job("queued"))]
    async with client(script, time) as api:
        with pytest.raises(OutcomeTimeout) as raised:
            await api.wait_for_outcome("job_1", timeout=10, poll_interval=4, max_poll_interval=4)
    assert raised.value.job["state"] == "queued"
    assert time.waits == [4.0, 4.0, 2.0]  # the last wait ends at the deadline
    assert len(script.received) == 4


async def test_enqueue_sends_the_optional_fields_as_the_api_names_them(
    script: Script, time: FakeTime
) -> None:
    script.answers = [lambda _: web.json_response(job(), status=202)]
    paris = timezone(timedelta(hours=1))
    async with client(script, time) as api:
        await api.enqueue(
            mailbox_id="mbx_1",
            mode="draft",
            message=MESSAGE,
            reference="INV-9",
            deadline=datetime(2026, 12, 24, 18, 0, tzinfo=paris),
            send_at="2026-12-20T08:00:00Z",
            priority=-3,
        )
        with pytest.raises(ValueError, match="time zone"):
            await api.enqueue(
                mailbox_id="mbx_1", mode="send", message=MESSAGE, send_at=datetime(2026, 12, 20)
            )
        with pytest.raises(ValueError, match="accept_duplicate_risk"):
            await api.retry_job("job_1", accept_duplicate_risk=False)
    assert script.bodies == [
        {
            "mailbox_id": "mbx_1",
            "mode": "draft",
            "message": MESSAGE,
            "reference": "INV-9",
            "deadline": "2026-12-24T18:00:00+01:00",
            "send_at": "2026-12-20T08:00:00Z",
            "priority": -3,
        }
    ]
    assert API_KEY not in repr(api)


async def test_the_job_actions_reach_their_routes(script: Script, time: FakeTime) -> None:
    script.answers = [lambda request: web.json_response(job(request.path.rsplit("/", 1)[1]))]
    async with client(script, time) as api:
        await api.cancel_job("job_1")
        await api.resolve_job("job_1")
        await api.retry_job("job_1", accept_duplicate_risk=True)
    assert [(r.method, r.path) for r in script.received] == [
        ("POST", "/v1/jobs/job_1/cancel"),
        ("POST", "/v1/jobs/job_1/resolve"),
        ("POST", "/v1/jobs/job_1/retry"),
    ]
    assert script.bodies == [None, None, {"accept_duplicate_risk": True}]


async def test_a_session_passed_in_is_used_and_left_open(script: Script, time: FakeTime) -> None:
    script.answers = [lambda _: web.json_response({"mailboxes": []})]
    async with aiohttp.ClientSession() as session:
        async with client(script, time, session=session) as api:
            assert await api.list_mailboxes() == []
        assert not session.closed
