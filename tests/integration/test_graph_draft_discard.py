"""A delivery that resumes with an incomplete draft deletes it before starting over.

The sandbox has no ``DELETE /me/messages/{id}``, so a local stub of those Graph paths
answers here and records what it was asked, in order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mailbox_worker.errors import PermanentError
from mailbox_worker.providers.base import OutgoingMessage
from mailbox_worker.providers.graph import GraphProvider


class StubGraph:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None]] = []
        self.delete_status = 204

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            (request.method, request.raw_path, request.headers.get("Authorization"))
        )
        if request.method == "DELETE":
            return web.Response(status=self.delete_status)
        return web.Response(status=202)


@pytest.fixture
async def stub() -> AsyncIterator[tuple[StubGraph, str]]:
    graph = StubGraph()
    application = web.Application()
    application.router.add_route("*", "/v1.0/{path:.*}", graph.handle)
    server = TestServer(application, host="127.0.0.1")
    await server.start_server()
    yield graph, str(server.make_url("/v1.0"))
    await server.close()


def resumed(draft_id: str) -> OutgoingMessage:
    mime = b"From: a@contoso.example\r\nTo: b@fabrikam.example\r\nSubject: s\r\n\r\nhi\r\n"
    return OutgoingMessage("job_1", mime, "<job_1@contoso.example>", draft_id=draft_id)


@pytest.mark.parametrize("delete_status", [204, 404])  # 404: the draft was already gone
async def test_an_incomplete_draft_is_deleted_before_starting_over(
    stub: tuple[StubGraph, str], delete_status: int
) -> None:
    graph, url = stub
    graph.delete_status = delete_status
    provider = GraphProvider(url)
    try:
        receipt = await provider.send("token", resumed("AAMk/draft=1"))
    finally:
        await provider.close()
    assert receipt.state == "sent"
    assert graph.requests == [
        ("DELETE", "/v1.0/me/messages/AAMk%2Fdraft=1", "Bearer token"),
        ("POST", "/v1.0/me/sendMail", "Bearer token"),
    ]


async def test_a_draft_that_cannot_be_deleted_stops_the_delivery(
    stub: tuple[StubGraph, str],
) -> None:
    graph, url = stub
    graph.delete_status = 403
    provider = GraphProvider(url)
    try:
        with pytest.raises(PermanentError):
            await provider.send("token", resumed("d1"))
    finally:
        await provider.close()
    assert [method for method, _, _ in graph.requests] == ["DELETE"]
