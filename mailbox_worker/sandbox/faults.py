"""Applying a queued fault around one operation.

Kinds (see ``SandboxControls.queue_fault``):

* ``status`` — answer the provider's real error body for ``status`` without processing;
* ``reset`` — drop the connection without an answer, before processing;
* ``delay`` — sleep ``delay`` seconds, then process and answer normally (a client that timed out
  meanwhile does not learn that the request succeeded — as with the real services);
* ``accept_then_status`` — process (a message IS stored, a token IS issued), then answer the error;
* ``accept_then_reset`` — process, then drop the connection: the ambiguous case.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from .controls import Fault, SandboxControls

Process = Callable[[], Awaitable[web.StreamResponse]]
ErrorAnswer = Callable[[Fault], web.StreamResponse]


def drop_connection(request: web.Request) -> web.Response:
    """Close the connection at once; the returned response is never sent."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)


async def with_fault(
    request: web.Request,
    controls: SandboxControls,
    operations: tuple[str, ...],
    process: Process,
    error_answer: ErrorAnswer,
) -> web.StreamResponse:
    """Run ``process`` under the first fault queued for any of ``operations`` (if any)."""
    fault = None
    for operation in operations:
        fault = controls.take_fault(operation)
        if fault is not None:
            break
    if fault is None:
        return await process()
    if fault.kind == "status":
        return error_answer(fault)
    if fault.kind == "reset":
        return drop_connection(request)
    if fault.kind == "delay":
        await asyncio.sleep(fault.delay)
        return await process()
    await process()
    if fault.kind == "accept_then_status":
        return error_answer(fault)
    return drop_connection(request)
