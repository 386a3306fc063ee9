"""The sandbox HTTPS server: Microsoft identity, Graph mail, Google OAuth, Gmail and the
``/_sandbox/`` API on one port, path-routed like the real hosts (``/{tenant}/oauth2/v2.0/…`` for
login.microsoftonline.com, ``/v1.0/…`` for Graph, ``/o/oauth2/v2/auth`` for accounts.google.com,
``/token`` and ``/revoke`` for oauth2.googleapis.com, ``/gmail/v1/…``, ``/upload/gmail/v1/…`` and
``/resumable/upload/gmail/v1/…`` for gmail.googleapis.com).

``Sandbox`` is for tests and embedding (start and stop it in your event loop); ``serve`` is what
the ``mailbox-worker sandbox`` command runs until interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

from aiohttp import web

from .admin import ControlEndpoints
from .ca import CertificatePaths, ensure_certificates, server_ssl_context
from .google.admin import GoogleAdminEndpoints
from .google.authorize import AUTHORIZE_PATH, GoogleAuthorizeEndpoint
from .google.gmail import GmailEndpoints
from .google.gmail_admin import GmailAdminEndpoints
from .google.token_endpoint import GoogleTokenEndpoints
from .microsoft.admin import AdminEndpoints
from .microsoft.authorize import IdentityEndpoints
from .microsoft.graph import REQUEST_BODY_LIMIT, GraphEndpoints
from .microsoft.graph_errors import graph_middleware
from .microsoft.state import DEFAULT_TENANT
from .microsoft.token_endpoint import TokenEndpoint
from .signing import SigningKey
from .state import SandboxState

# aiohttp must accept bodies above Graph's 4 MB so that Graph itself can answer 413.
_SERVER_BODY_LIMIT = 4 * REQUEST_BODY_LIMIT


class Sandbox:
    """A local, HTTPS, in-memory Microsoft identity + Graph mail + Google OAuth + Gmail service."""

    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        access_token_lifetime: int = 3599,
    ) -> None:
        self._data_dir = Path(data_dir)
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._certificates: CertificatePaths | None = None
        self._runner: web.AppRunner | None = None
        self.state = SandboxState(access_token_lifetime=access_token_lifetime)

    def _application(self, signing_key: SigningKey) -> web.Application:
        application = web.Application(
            middlewares=[graph_middleware(self.state.clock)], client_max_size=_SERVER_BODY_LIMIT
        )
        application.add_routes(IdentityEndpoints(self.state, signing_key).routes())
        application.add_routes(TokenEndpoint(self.state, signing_key).routes())
        application.add_routes(GraphEndpoints(self.state).routes())
        application.add_routes(AdminEndpoints(self.state).routes())
        application.add_routes(ControlEndpoints(self.state).routes())
        google = self.state.google
        application.add_routes(GoogleAuthorizeEndpoint(self.state, google).routes())
        application.add_routes(GoogleTokenEndpoints(self.state, google, signing_key).routes())
        application.add_routes(GoogleAdminEndpoints(google).routes())
        application.add_routes(GmailEndpoints(self.state, google, self.state.gmail).routes())
        application.add_routes(GmailAdminEndpoints(google, self.state.gmail).routes())
        return application

    async def start(self) -> None:
        """Create certificates if needed and start listening (port 0 picks a free port)."""
        if self._runner is not None:
            raise RuntimeError("the sandbox is already running")
        extra_names = () if self._host in ("127.0.0.1", "::1", "localhost", "") else (self._host,)
        self._certificates = await asyncio.to_thread(
            ensure_certificates, self._data_dir, extra_names
        )
        signing_key = await asyncio.to_thread(SigningKey)  # RSA generation takes a while
        runner = web.AppRunner(self._application(signing_key), access_log=None)
        await runner.setup()
        site = web.TCPSite(
            runner,
            self._host,
            self._requested_port,
            ssl_context=server_ssl_context(self._certificates),
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The TCP port it listens on (after ``start``)."""
        if self._port is None:
            raise RuntimeError("the sandbox has not been started")
        return self._port

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:PORT`` (IPv6 hosts in brackets)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"https://{host}:{self.port}"

    @property
    def ca_path(self) -> Path:
        """The CA certificate (PEM) that clients must trust."""
        if self._certificates is None:
            return self._data_dir / "sandbox-ca.pem"
        return self._certificates.ca_certificate

    def authority_url(self, tenant: str = DEFAULT_TENANT) -> str:
        """The msal ``authority`` for ``tenant`` (a name, domain, GUID or ``common``)."""
        return f"{self.base_url}/{tenant}"

    @property
    def graph_url(self) -> str:
        """The Graph v1.0 base URL."""
        return f"{self.base_url}/v1.0"

    @property
    def google_auth_url(self) -> str:
        """Google's authorization endpoint (``accounts.google.com/o/oauth2/v2/auth``)."""
        return f"{self.base_url}{AUTHORIZE_PATH}"

    @property
    def google_token_url(self) -> str:
        """Google's token endpoint (``oauth2.googleapis.com/token``): google-auth ``token_uri``."""
        return f"{self.base_url}/token"

    @property
    def google_revoke_url(self) -> str:
        """Google's revoke endpoint (``oauth2.googleapis.com/revoke``)."""
        return f"{self.base_url}/revoke"

    @property
    def gmail_api_endpoint(self) -> str:
        """google-api-python-client's ``api_endpoint`` for Gmail (docs/providers.md D7):
        ``https://127.0.0.1:PORT/``; uploads reach the same host and port."""
        return f"{self.base_url}/"


async def serve(host: str, port: int, data_dir: Path) -> None:
    """Run a sandbox until cancelled, SIGINT or SIGTERM; prints its base URL and CA path."""
    sandbox = Sandbox(data_dir, host=host, port=port)
    await sandbox.start()
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal_number, stopped.set)
            installed.append(signal_number)
    try:
        print(f"sandbox listening on {sandbox.base_url}", flush=True)
        print(f"sandbox CA certificate: {sandbox.ca_path}", flush=True)
        print(f"sandbox Google token URL: {sandbox.google_token_url}", flush=True)
        await stopped.wait()
    finally:
        for signal_number in installed:
            loop.remove_signal_handler(signal_number)
        await sandbox.stop()
