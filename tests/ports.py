"""A free TCP port on the loopback address, for servers a test starts."""

from __future__ import annotations

import socket

SPAN = 4
"""Ports after the one returned that are free too: ``serve --workers N`` puts each worker
process's own server on ``server.port + 1 + i`` (docs/deploy.md#prometheus)."""


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
