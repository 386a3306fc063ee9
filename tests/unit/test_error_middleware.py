"""The error middleware: a client that hangs up is not a server failure, and a database whose
connection was reset is not a client that hung up."""

from __future__ import annotations

import json
import logging
from typing import cast
from unittest.mock import Mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from mailbox_worker.api.errors import CLIENT_CLOSED_REQUEST, error_middleware, error_response
from mailbox_worker.db.outage import is_database_unavailable
from mailbox_worker.logs import REQUEST_ID


def request_over(closing: bool) -> web.Request:
    transport = Mock()
    transport.is_closing.return_value = closing
    return make_mocked_request("POST", "/v1/jobs", transport=transport)


async def reset(request: web.Request) -> web.StreamResponse:
    raise ConnectionResetError("Connection lost")


async def test_a_connection_reset_by_the_client_is_499_not_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    middleware = error_middleware(1024, is_database_unavailable)
    with caplog.at_level(logging.INFO):
        response = await middleware(request_over(closing=True), reset)
    assert response.status == CLIENT_CLOSED_REQUEST == 499
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_a_reset_of_the_databases_connection_is_503_while_the_client_waits() -> None:
    """asyncpg raises ConnectionResetError when PostgreSQL restarts mid-request; the client
    is still there and must be told to retry."""
    middleware = error_middleware(1024, lambda error: isinstance(error, ConnectionResetError))
    response = await middleware(request_over(closing=False), reset)
    assert response.status == 503
    assert response.headers["Retry-After"] == "5"


async def test_another_reset_while_the_client_waits_is_a_logged_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    middleware = error_middleware(1024)
    response = await middleware(request_over(closing=False), reset)
    assert response.status == 500
    assert [record.levelno for record in caplog.records] == [logging.ERROR]


def test_an_error_answer_made_during_a_request_names_that_request_s_id() -> None:
    """A middleware inside the request id's (rate limiting, say) may call ``error_response``
    without the id: header and body still agree with the request's."""
    token = REQUEST_ID.set("req_inside")
    try:
        inside = error_response(429, "rate_limited", "slow down")
    finally:
        REQUEST_ID.reset(token)
    outside = error_response(503, "too_many_connections", "later")
    assert inside.headers["X-Request-Id"] == "req_inside"
    assert json.loads(cast(bytes, inside.body))["error"]["request_id"] == "req_inside"
    drawn = outside.headers["X-Request-Id"]
    assert drawn.startswith("req_") and drawn != "req_inside"
    assert json.loads(cast(bytes, outside.body))["error"]["request_id"] == drawn
