"""The error middleware: a client that hangs up is not a server failure."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from mailbox_worker.api.errors import CLIENT_CLOSED_REQUEST, error_middleware


async def test_a_connection_reset_while_reading_is_499_not_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise ConnectionResetError("Connection lost")  # aiohttp, reading a cut-off body

    middleware = error_middleware(1024)
    with caplog.at_level(logging.INFO):
        response = await middleware(make_mocked_request("POST", "/v1/jobs"), handler)
    assert response.status == CLIENT_CLOSED_REQUEST == 499
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
