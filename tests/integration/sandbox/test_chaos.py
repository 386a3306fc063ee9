"""The sandbox's chaos mode: seeded random faults, counted by kind and by Message-ID."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import pytest
import requests

from mailbox_worker.sandbox import Sandbox
from mailbox_worker.sandbox.controls import CHAOS_KINDS, SandboxControls

from .microsoft_helpers import bearer, invoice_mime, mime_body, sign_in, stored_messages


async def _send(http: aiohttp.ClientSession, url: str, token: str, message_id: str) -> str:
    """Send one message (``client-request-id``: its Message-ID); the outcome as the client saw
    it: a status, ``dropped`` or ``timeout``."""
    message = invoice_mime()
    message.replace_header("Message-ID", message_id)
    headers = {**bearer(token), "client-request-id": message_id}
    try:
        async with http.post(url, data=mime_body(message), headers=headers) as answer:
            return str(answer.status)
    except TimeoutError:
        return "timeout"
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        return "dropped"


def test_the_draws_are_the_same_for_the_same_seed() -> None:
    rates = dict.fromkeys(CHAOS_KINDS, 0.1)
    draws = []
    for _ in range(2):
        controls = SandboxControls()
        chaos = controls.start_chaos(rates, seed=42)
        faults = [chaos.draw("graph.sendMail") for _ in range(200)]
        draws.append([None if fault is None else fault.label for fault in faults])
        assert chaos.draw("identity.token") is None  # not a chaos operation
    assert draws[0] == draws[1]
    assert set(draws[0]) == {None, *CHAOS_KINDS}


@pytest.mark.parametrize(
    "rates",
    [{"teleport": 0.1}, {"reset": 0.7, "slow": 0.7}, {"reset": -0.1}],
)
def test_invalid_rates_are_refused(rates: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"chaos kinds|rates"):
        SandboxControls().start_chaos(rates)


async def test_chaos_over_http_records_ambiguous_faults_by_message_id(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    url = f"{sandbox.graph_url}/me/sendMail"
    body = {"rates": {"accept_then_reset": 1.0}, "seed": 7, "duration": 60}
    async with http.post(f"{sandbox.base_url}/_sandbox/chaos", json=body) as answer:
        assert answer.status == 201
        assert (await answer.json())["active"] is True
    assert await _send(http, url, signed_in.access_token, "<a@x.example>") == "dropped"
    async with http.delete(f"{sandbox.base_url}/_sandbox/chaos") as answer:
        report = await answer.json()
    assert report["active"] is False
    assert report["injected"] == {"accept_then_reset": 1}
    assert report["faults_by_message_id"] == {"<a@x.example>": ["accept_then_reset"]}
    assert await _send(http, url, signed_in.access_token, "<b@x.example>") == "202"
    sent = await stored_messages(http, sandbox, folder="sent")
    assert [each["internet_message_id"] for each in sent] == ["<a@x.example>", "<b@x.example>"]

    async with http.post(
        f"{sandbox.base_url}/_sandbox/chaos", json={"rates": {"nonsense": 1}}
    ) as answer:
        assert answer.status == 400


async def test_faults_before_processing_store_nothing_and_name_no_message(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    url = f"{sandbox.graph_url}/me/sendMail"
    for label, seen in (("throttle", "429"), ("unavailable", "503"), ("reset", "dropped")):
        sandbox.state.start_chaos({label: 1.0}, retry_after=3)
        assert await _send(http, url, signed_in.access_token, f"<{label}@x.example>") == seen
        assert sandbox.state.chaos_report()["injected"] == {label: 1}
        assert sandbox.state.faults_by_message_id == {}
        assert sandbox.state.faults_by_request_id == {f"<{label}@x.example>": label}
    assert await stored_messages(http, sandbox) == []
    sandbox.state.start_chaos({"accept_then_error": 1.0}, error_status=502)
    assert await _send(http, url, signed_in.access_token, "<e@x.example>") == "502"
    assert sandbox.state.faults_by_message_id == {"<e@x.example>": ["accept_then_error"]}
    assert len(await stored_messages(http, sandbox)) == 1
    with pytest.raises(ValueError, match="other than 503"):
        sandbox.state.start_chaos({"accept_then_error": 1.0}, error_status=503)


async def test_a_hang_lasts_until_the_client_gives_up_and_the_chaos_ends_on_time(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    url = f"{sandbox.graph_url}/me/sendMail"
    sandbox.state.start_chaos({"accept_then_hang": 1.0}, duration=1.0, hang_limit=30)
    started = asyncio.get_running_loop().time()
    async with asyncio.timeout(10):
        client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=sandbox.ca_path)),
            timeout=aiohttp.ClientTimeout(total=0.3),
        )
        async with client:
            assert await _send(client, url, signed_in.access_token, "<h@x.example>") == "timeout"
        while sandbox.state.in_flight:  # the sandbox lets the request go soon after
            await asyncio.sleep(0.01)
    assert asyncio.get_running_loop().time() - started < 2
    assert sandbox.state.faults_by_message_id == {"<h@x.example>": ["accept_then_hang"]}
    await asyncio.sleep(1.0)
    assert await _send(http, url, signed_in.access_token, "<late@x.example>") == "202"
    assert sandbox.state.chaos_report()["active"] is False
    assert sandbox.state.injected == {"accept_then_hang": 1}


async def test_slow_answers_arrive_late_but_normally(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    sandbox.state.start_chaos({"slow": 1.0}, slow_delay=0.2)
    started = asyncio.get_running_loop().time()
    url = f"{sandbox.graph_url}/me/sendMail"
    assert await _send(http, url, signed_in.access_token, "<s@x.example>") == "202"
    assert asyncio.get_running_loop().time() - started >= 0.2
    sandbox.state.reset()
    assert sandbox.state.chaos is None
    assert sandbox.state.injected == {}


async def test_calls_without_a_fault_take_the_latency(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    body = {"rates": {}, "latency": 0.2}
    async with http.post(f"{sandbox.base_url}/_sandbox/chaos", json=body) as answer:
        assert answer.status == 201
    started = asyncio.get_running_loop().time()
    url = f"{sandbox.graph_url}/me/sendMail"
    assert await _send(http, url, signed_in.access_token, "<l@x.example>") == "202"
    assert asyncio.get_running_loop().time() - started >= 0.2
    assert sandbox.state.injected == {}
