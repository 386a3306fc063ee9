"""A free TCP port on the loopback address, for servers a test starts."""

from __future__ import annotations

import socket

import aiohttp

SPAN = 4
"""Ports after the one returned that are free too: ``serve --workers N`` puts each worker
process's own server on ``server.port + 1 + i`` (docs/deploy.md#prometheus)."""


NOT_LISTENING = (aiohttp.ClientConnectionError, aiohttp.ClientResponseError)
"""What an HTTP request to a port nothing listens on (yet, or any more) may raise: refused or
reset, or, since ``free_port`` picks from the ephemeral range, the request read back as its
own answer. Connecting to such a port, the OS may pick that very port as the connection's
own end (a TCP self-connection), and aiohttp answers the request line it reads where a status
line was expected with ``ClientResponseError`` (400, "Bad status line"). For readiness polls
only: ``ContentTypeError`` (a body that is not JSON) is a ``ClientResponseError`` too, and a
call that reads JSON must not take it for a server not yet up."""


def free_port(span: int = SPAN) -> int:
    """A port nothing listens on right now, nor on the ``span - 1`` ports after it (the OS
    picks it; nothing holds any of them afterwards). The OS picks from the ephemeral range,
    where the next ports may be the local ends of other connections: those are checked too,
    as a worker process's server bound to one of them would fail to start."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if all(_bindable(port + offset) for offset in range(1, span)):
            return port


def _bindable(port: int) -> bool:
    if port > 65535:
        return False
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
