"""Applying a fault — queued, or drawn by chaos — around one operation.

Kinds (see ``SandboxControls.queue_fault`` and ``SandboxControls.start_chaos``):

* ``status`` — answer the provider's real error body for ``status`` without processing;
* ``reset`` — drop the connection without an answer, before processing;
* ``delay`` — sleep ``delay`` seconds, then process and answer normally (a client that timed out
  meanwhile does not learn that the request succeeded — as with the real services); for a
  delay on every call, fixed or drawn, see the latency rules (module ``latency``);
* ``accept_then_status`` — process (a message IS stored, a token IS issued), then answer the error;
* ``accept_then_reset`` — process, then drop the connection: the ambiguous case;
* ``accept_then_hang`` — process, then answer nothing until the client hangs up (at most
  ``delay`` seconds), then drop the connection: what a client's timeout after sending meets.

Every injected fault is counted by its label (``SandboxControls.note_fault``); one that comes
after processing also records the ``Message-ID`` of each message the processing stored, so a
test can tell which messages were hit by a fault that left the client in doubt. A fault before
processing cannot name the message (the body was read and discarded by the caller); every fault
also records the request's ``client-request-id`` header, which a client logs with its own ids.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from aiohttp import web

from .controls import Fault, SandboxControls

Process = Callable[[], Awaitable[web.StreamResponse]]
ErrorAnswer = Callable[[Fault], web.StreamResponse]

HANG_POLL_SECONDS = 0.01
_PEER_CLOSED_STATES = frozenset({7, 8, 9})
"""TCP_CLOSE, TCP_CLOSE_WAIT, TCP_LAST_ACK (linux/tcp_states.h): the peer's FIN or RST came."""


class _Stored(Protocol):
    internet_message_id: str


def drop_connection(request: web.Request) -> web.Response:
    """Close the connection at once; the returned response is never sent."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)


def client_gone(request: web.Request) -> bool:
    """Whether the client has closed the request's connection."""
    transport = request.transport
    return transport is None or transport.is_closing()


def client_hung_up(request: web.Request) -> bool:
    """Whether the client has closed its side of the request's connection, even if the event
    loop has not read that yet: ``client_gone``, or (on Linux) the socket's TCP state shows the
    peer's FIN or RST has arrived. What a provider may still be working on after its client
    gave up, as a busy server may not have noticed yet."""
    if client_gone(request):
        return True
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sys.platform != "linux":  # the state numbers are Linux's
        return False
    try:
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    except OSError as error:
        return error.errno in (errno.EBADF, errno.ENOTCONN)  # else: cannot tell, so no
    return state in _PEER_CLOSED_STATES


async def wait_for_client_to_leave(request: web.Request, limit: float) -> None:
    """Return once the client has hung up, or after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    # Polled: aiohttp offers no event for a peer's hang-up to a handler it does not cancel.
    while not client_gone(request) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(HANG_POLL_SECONDS)


def _stored_messages(controls: SandboxControls) -> Mapping[str, _Stored]:
    """The simulator's stored messages by Graph id (Microsoft's state has them), else none."""
    stored: Mapping[str, _Stored] | None = getattr(controls, "stored_messages", None)
    return stored if stored is not None else {}


async def _process_noting_messages(
    controls: SandboxControls, process: Process
) -> tuple[web.StreamResponse, list[str]]:
    """Run ``process``; also return the ``Message-ID`` of every message it stored."""
    before = set(_stored_messages(controls))
    answer = await process()
    stored = _stored_messages(controls)
    return answer, [stored[key].internet_message_id for key in set(stored) - before]


async def with_fault(
    request: web.Request,
    controls: SandboxControls,
    operations: tuple[str, ...],
    process: Process,
    error_answer: ErrorAnswer,
) -> web.StreamResponse:
    """Run ``process`` under the first fault queued for any of ``operations``, else under the
    fault chaos draws for the first of them (if any); first, whatever the fault, wait for the
    operation's latency (``SandboxControls.latency_for``)."""
    await controls.take_latency(operations)
    fault = None
    for operation in operations:
        fault = controls.take_fault(operation)
        if fault is not None:
            break
    chaos = controls.chaos
    if fault is None and operations and chaos is not None and chaos.applies(operations[0]):
        fault = chaos.draw(operations[0])
        if fault is None and chaos.latency:
            await controls.sleep(chaos.latency)
    if fault is None:
        return await process()
    request_id = request.headers.get("client-request-id")
    if fault.kind in ("status", "reset"):
        controls.note_fault(fault, request_id=request_id)
        return error_answer(fault) if fault.kind == "status" else drop_connection(request)
    if fault.kind == "delay":
        controls.note_fault(fault, request_id=request_id)
        await controls.sleep(fault.delay)
        return await process()
    answer, message_ids = await _process_noting_messages(controls, process)
    controls.note_fault(fault, message_ids, request_id)
    if fault.kind == "accept_then_status":
        return error_answer(fault)
    if fault.kind == "accept_then_hang":
        await wait_for_client_to_leave(request, fault.delay)
    del answer
    return drop_connection(request)
