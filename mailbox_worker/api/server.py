"""Serving the API over TCP, with bounds on slow, idle and too many clients.

aiohttp's server keeps a connection open while a request head trickles in (its keep-alive
timer closes only a connection waiting idle for a request, by default after an hour), and
accepts connections until the process runs out of file descriptors. ``start_server`` runs
the application through a ``GuardedSite``, whose connections are ``GuardedRequestHandler``s:

- a request head (request line and headers) must arrive within ``header_timeout`` seconds,
  counted from the connection's opening and, on a kept-alive connection, from the next
  request's first byte; otherwise the connection is answered ``408 request_timeout`` (when a
  byte of the head came) and closed;
- a connection idle between requests is closed after ``keepalive_timeout`` (aiohttp's timer);
- at most ``max_connections`` are open at once; a further one is answered
  ``503 too_many_connections`` and closed at once, before aiohttp starts a request task;
- what aiohttp answers itself (a request it cannot parse) is JSON that quotes nothing of the
  request (``protocol_errors``), instead of aiohttp's plain text echoing it.

The body's deadline is the handlers' (``parsing.read_json``): only they know when they read.

Why a handler subclass and a site: aiohttp has no setting for a head deadline or a connection
cap, and ``web.Server`` always builds a plain ``RequestHandler``. ``GuardedSite`` is a
``web.BaseSite`` (aiohttp's extension point for accepting connections) that gives
``loop.create_server`` its own protocol factory, still registering every connection with the
runner's ``web.Server`` (so graceful shutdown is aiohttp's). The handler subclass overrides
``connection_made``, ``connection_lost``, ``data_received``, ``finish_response`` and
``handle_error``; of aiohttp's private state it reads only ``_request_count`` (heads parsed
so far) and ``_loop``, and the site uses ``BaseSite``'s ``_runner``, ``_backlog`` and
``_server``, which are there for subclasses. An aiohttp upgrade is checked by
``tests/integration/test_slow_clients.py`` (every API integration test serves through this).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import cast

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from yarl import URL

from mailbox_worker.api.errors import error_response
from mailbox_worker.api.protocol_errors import (
    classify,
    head_timeout_answer,
    too_many_connections_answer,
)
from mailbox_worker.errors import redacted_traceback

log = logging.getLogger(__name__)

# Descriptors the daemon needs besides client connections: database pool, outbound HTTP,
# logs, the listening socket.
DESCRIPTOR_RESERVE = 64


@dataclass(frozen=True)
class ServerLimits:
    """Seconds and counts from ``[server]`` (see ``config/mailbox-worker.toml``)."""

    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    max_connections: int = 512


class ConnectionCount:
    """The open connections of one site, against its limit.

    Warns once when the limit is reached, and again only after the count fell below 90% of
    it: a flood is one log line, not one per refused connection.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self._full = False

    def admit(self) -> bool:
        """Count one more connection and return True, or return False at the limit."""
        if self.open >= self.limit:
            if not self._full:
                self._full = True
                log.warning(
                    "%d connections open (server.max_connections): refusing new ones", self.limit
                )
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1
        if self._full and self.open <= self.limit * 9 // 10:
            self._full = False
            log.info("open connections back under the limit; accepting again")


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection protocol, with a head deadline, a connection cap and JSON errors.

    Guarantees: an admitted connection is never waiting for a head for more than
    ``header_timeout`` seconds from the head's start (the connection's opening, or the first
    byte after the previous request's body); a refused one never reaches aiohttp.
    """

    __slots__ = (
        "_admitted",
        "_answered",
        "_connections",
        "_expecting_head",
        "_head_bytes",
        "_head_timer",
        "_header_timeout",
        "_request_line_ended",
        "_request_line_length",
    )

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        connections: ConnectionCount,
        limits: ServerLimits,
    ) -> None:
        super().__init__(
            manager,
            loop=loop,
            keepalive_timeout=limits.keepalive_timeout,
            # No access log (it would hold paths and queries; the HTTP metrics count
            # instead). aiohttp documents None for this but types it as a Logger.
            access_log=None,  # type: ignore[arg-type]
        )
        self._connections = connections
        self._header_timeout = limits.header_timeout
        self._admitted = False
        self._expecting_head = True
        self._answered = 0  # requests answered (aiohttp's _request_count: heads parsed)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._request_line_length = 0
        self._request_line_ended = False

    # -- admission --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._connections.admit():
            # Refused before aiohttp sees it: no request task, no timers, no parsing.
            cast(asyncio.Transport, transport).write(too_many_connections_answer())
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._start_head_clock()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._connections.release()
        self._stop_head_clock()
        super().connection_lost(exc)

    # -- the head deadline ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._expecting_head and data:
            if self._head_timer is None:  # a kept-alive connection's next head starts now
                self._start_head_clock()
            self._count_head_bytes(data)
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:  # a head arrived (or a parse error was queued)
            self._expecting_head = False
            self._stop_head_clock()

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._answered += 1
            # Bytes after the answer belong to this request's body until it ends (aiohttp
            # reads a body left unread before the next request); then a head is due.
            request.content.on_eof(self._expect_next_head)

    def _expect_next_head(self) -> None:
        if self._answered == self._request_count:  # not a pipelined head already parsed
            self._expecting_head = True

    def _start_head_clock(self) -> None:
        self._stop_head_clock()
        self._head_bytes = self._request_line_length = 0
        self._request_line_ended = False
        self._head_timer = self._loop.call_later(self._header_timeout, self._head_timed_out)

    def _stop_head_clock(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _count_head_bytes(self, data: bytes) -> None:
        self._head_bytes += len(data)
        if not self._request_line_ended:
            end = data.find(b"\n")
            self._request_line_ended = end >= 0
            self._request_line_length += end if end >= 0 else len(data)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport is None or not self._expecting_head:
            return
        if self._head_bytes:  # a client that sent nothing has no request to answer
            self.transport.write(head_timeout_answer())
        log.debug("closed a connection whose request head took over %ss", self._header_timeout)
        self.force_close()  # what aiohttp's keep-alive timer does to an idle connection

    # -- aiohttp's own answers --------------------------------------------------------------

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """JSON for what aiohttp answers itself (``message``, which may quote the request, is
        ignored); like aiohttp's, the answer closes the connection."""
        if request.writer.output_size > 0:
            raise ConnectionError("the answer was already started; the connection is broken")
        failure = classify(
            exc, request_line_length=self._request_line_length, max_line_size=self.max_line_size
        )
        if isinstance(exc, HttpProcessingError):
            # BadHttpMethod first on a connection is mostly TLS or a scanner on this port.
            quiet = isinstance(exc, BadHttpMethod) and self._request_count == 1
            log.log(
                logging.DEBUG if quiet else logging.INFO,
                "refused a malformed request (%s): %s %s",
                type(exc).__name__,
                failure.status,
                failure.code,
            )
        elif exc is not None:
            log.error("unhandled %s\n%s", type(exc).__name__, redacted_traceback(exc))
        response = error_response(failure.status, failure.code, failure.message)
        response.force_close()
        return response


class GuardedSite(web.BaseSite):
    """A TCP listener whose connections are ``GuardedRequestHandler``s of the runner's server."""

    __slots__ = ("_host", "_limits", "_listener", "_port")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limits: ServerLimits) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._limits = limits
        self._listener: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port once started (useful with port 0), the requested one before."""
        if self._listener is not None and self._listener.sockets:
            return int(self._listener.sockets[0].getsockname()[1])
        return self._port

    @property
    def name(self) -> str:
        return str(URL.build(scheme="http", host=self._host, port=self.port))

    async def start(self) -> None:
        await super().start()  # registers the site with its runner
        server = self._runner.server
        assert server is not None  # BaseSite.__init__ refuses a runner not set up
        loop = asyncio.get_running_loop()
        connections = ConnectionCount(self._limits.max_connections)
        limits = self._limits

        def connection() -> GuardedRequestHandler:
            return GuardedRequestHandler(server, loop=loop, connections=connections, limits=limits)

        self._listener = await loop.create_server(
            connection, self._host, self._port, backlog=self._backlog
        )
        self._server = self._listener  # BaseSite.stop closes it


async def start_server(
    app: web.Application, host: str, port: int, limits: ServerLimits
) -> tuple[web.AppRunner, GuardedSite]:
    """Serve ``app`` on ``host:port`` within ``limits``; the caller cleans the runner up."""
    warn_if_descriptors_are_short(limits.max_connections)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = GuardedSite(runner, host, port, limits)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, site


def warn_if_descriptors_are_short(max_connections: int) -> None:
    """Log a warning when the open-file limit cannot hold ``max_connections`` and the rest."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and max_connections + DESCRIPTOR_RESERVE > soft:
        log.warning(
            "server.max_connections is %d but the open-file limit (ulimit -n) is %d: "
            "raise the limit or lower the setting (%d are kept for the rest)",
            max_connections,
            soft,
            DESCRIPTOR_RESERVE,
        )
