"""``X-Request-Id``: on every answer (successes, failures, aiohttp's own 404 and 405), the
same in an error's body, kept from the client only when well formed, and in the log lines of
the request."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailbox_worker.logs import AddRequestId
from tests.integration.api_harness import RunningApi, running_api
from tests.integration.test_api_errors import CrashingConnector

DRAWN = re.compile(r"req_[0-9a-f]{32}")


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[RunningApi]:
    async with running_api(tmp_path) as running:
        yield running


async def test_each_answer_has_an_id_of_its_own(api: RunningApi) -> None:
    first = await api.call("GET", "/healthz")
    second = await api.call("GET", "/healthz")
    ids = [first.headers["X-Request-Id"], second.headers["X-Request-Id"]]
    assert all(DRAWN.fullmatch(identifier) for identifier in ids)
    assert ids[0] != ids[1]


@pytest.mark.parametrize("path", ["/openapi.json", "/metrics", "/readyz", "/admin"])
async def test_json_text_and_html_answers_carry_it_alike(api: RunningApi, path: str) -> None:
    answer = await api.call("GET", path)
    assert answer.status == 200
    assert DRAWN.fullmatch(answer.headers["X-Request-Id"])


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v1/account", 401), ("GET", "/v2/nothing", 404), ("PUT", "/v1/mailboxes", 405)],
)
async def test_a_failure_names_its_id_in_the_header_and_the_body(
    api: RunningApi, method: str, path: str, status: int
) -> None:
    answer = await api.call(method, path)
    assert answer.status == status
    assert DRAWN.fullmatch(answer.headers["X-Request-Id"])
    assert answer.json()["error"]["request_id"] == answer.headers["X-Request-Id"]


async def test_a_well_formed_incoming_id_is_kept(api: RunningApi) -> None:
    _, key = await api.account_with_key()
    answer = await api.call(
        "GET", "/v1/jobs/job_none", key=key, headers={"X-Request-Id": "lb-7f3a:01.x_y"}
    )
    assert answer.status == 404
    assert answer.headers["X-Request-Id"] == "lb-7f3a:01.x_y"
    assert answer.json()["error"]["request_id"] == "lb-7f3a:01.x_y"


@pytest.mark.parametrize("incoming", ["a" * 129, "has space", "-leading", 'quote"d', "ä"])
async def test_a_malformed_incoming_id_is_replaced(api: RunningApi, incoming: str) -> None:
    answer = await api.call("GET", "/healthz", headers={"X-Request-Id": incoming})
    assert DRAWN.fullmatch(answer.headers["X-Request-Id"])


async def test_the_log_lines_of_a_request_name_its_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(AddRequestId())  # as logs.configure installs it on its handler
    async with running_api(tmp_path, connector=lambda _: CrashingConnector()) as api:
        _, key = await api.account_with_key()
        answer = await api.call("GET", "/v1/mailboxes", key=key)
    assert answer.status == 500
    crash = [record for record in caplog.records if "unhandled" in record.getMessage()]
    assert [getattr(record, "request_id", None) for record in crash] == [
        answer.headers["X-Request-Id"]
    ]
    assert answer.json()["error"]["request_id"] == answer.headers["X-Request-Id"]
