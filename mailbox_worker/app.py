"""The composition root: builds every component from settings, and nothing else does.

``App.build`` wires engine → stores → vault → identity clients → providers → intake,
mailbox service and worker; ``App.serve`` runs the HTTP API and the worker until asked to
stop. Components receive what they need through their constructors; there are no
module-level singletons. Settings are read once, by the caller (the CLI): nothing here
reads the environment.

Tests build the same graph through the same ``App.build``, replacing only what reaches
outside the process or the present moment: the identity clients, the mail providers, the
clock and the key source (keyword arguments that default to what the settings name).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.metadata
import logging
import ssl
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from aiohttp import ClientTimeout, web
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

from mailbox_worker.accounts import AccountService
from mailbox_worker.api.admin_session import AdminSessions
from mailbox_worker.api.app import create_app
from mailbox_worker.api.operations import create_operations_app
from mailbox_worker.api.server import ServerLimits, start_server
from mailbox_worker.api.services import ApiServices
from mailbox_worker.clock import Clock, utcnow
from mailbox_worker.config import KEYS_VARIABLE, Settings
from mailbox_worker.db import migrate
from mailbox_worker.db.account_data import AccountData
from mailbox_worker.db.accounts import AccountStore
from mailbox_worker.db.audit_chain import AuditChain
from mailbox_worker.db.engine import create_engine, create_session_factory
from mailbox_worker.db.erasure import StorageScrubber
from mailbox_worker.db.locks import DatabaseLocks
from mailbox_worker.db.mailboxes import MailboxStore
from mailbox_worker.db.outage import is_database_unavailable
from mailbox_worker.db.pool_sizing import pool_capacity, pool_demand, pool_shortfall
from mailbox_worker.db.retention import Retention
from mailbox_worker.db.support_grants import SupportGrantStore
from mailbox_worker.db.violations import PolicyViolationLog
from mailbox_worker.errors import ConfigError, DatabaseUnavailable, redacted_traceback
from mailbox_worker.events.delivery import CallbackDispatcher
from mailbox_worker.events.outbox import Outbox
from mailbox_worker.jobs.intake import JobIntake
from mailbox_worker.jobs.queue import JobQueue
from mailbox_worker.jobs.store import JobStore
from mailbox_worker.jobs.wakeups import DueListener, announce, listen_dsn
from mailbox_worker.jobs.worker import Worker
from mailbox_worker.mailboxes.account_rights import AccountRights
from mailbox_worker.mailboxes.revocations import Revocations
from mailbox_worker.mailboxes.service import MailboxService
from mailbox_worker.periodic import Periodic
from mailbox_worker.policy.egress import GRAPH_UPLOAD_ORIGINS, EgressPolicy, origin
from mailbox_worker.prometheus import PrometheusTelemetry
from mailbox_worker.providers.base import MailProvider
from mailbox_worker.providers.egress_gate import EgressGate, egress_tracing
from mailbox_worker.providers.gmail import GmailProvider
from mailbox_worker.providers.google_gate import GoogleOperationGate
from mailbox_worker.providers.graph import GraphProvider
from mailbox_worker.tokens.access_tokens import AccessTokens
from mailbox_worker.tokens.google import GoogleIdentity
from mailbox_worker.tokens.identity_client import IdentityClient
from mailbox_worker.tokens.keys.env_source import EnvKeySource
from mailbox_worker.tokens.keys.file_source import FileKeySource
from mailbox_worker.tokens.keys.keyring_source import KeyringKeySource
from mailbox_worker.tokens.keys.port import KeySource
from mailbox_worker.tokens.microsoft import MicrosoftIdentity
from mailbox_worker.tokens.rotation import KeyRotation, RotationSchedule
from mailbox_worker.tokens.vault import TokenVault

log = logging.getLogger(__name__)

CALLBACK_PATH = "/oauth/callback"
AUDIT_SEAL_INTERVAL = 30.0
"""Seconds between passes of the audit sealer (``db/audit_chain.py``)."""

Role = Literal["all", "api", "worker"]
"""What one ``serve`` process runs (docs/deploy.md#roles-and-worker-processes): ``all`` the
API, the worker and the background loops; ``api`` the API and the background loops;
``worker`` the worker alone, serving only ``/healthz``, ``/readyz`` and ``/metrics``."""
ROLES: tuple[Role, ...] = ("all", "api", "worker")


def _version() -> str:
    """The installed distribution's version, for ``mailbox_worker_build_info``."""
    try:
        return importlib.metadata.version("mailbox-worker")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def key_source(settings: Settings) -> KeySource:
    """The key-encryption-key source the settings name."""
    keys = settings.keys
    if keys.source == "file":
        return FileKeySource(Path(keys.file), create_if_missing=keys.create_if_missing)
    if keys.source == "env":
        if not keys.env_value:
            raise ConfigError("keys.source", f"is 'env' but {KEYS_VARIABLE} is not set")
        return EnvKeySource(keys.env_value)
    return KeyringKeySource(keys.keyring_service, create_if_missing=keys.create_if_missing)


def _ssl_context(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file or None)


def egress_policy(settings: Settings) -> EgressPolicy:
    """The only destinations of outbound requests (docs/privacy.md PP-5): the origins of the
    endpoints the settings name, and where Graph uploads large attachments. ``ConfigError``
    naming the setting that is not an https URL (http: loopback only)."""
    endpoints = {
        "microsoft.authority": settings.microsoft.authority,
        "microsoft.graph_url": settings.microsoft.graph_url,
        "google.token_url": settings.google.token_url,
        "google.revoke_url": settings.google.revoke_url,
        "google.userinfo_url": settings.google.userinfo_url,
        "google.gmail_url": settings.google.gmail_url,
    }
    if settings.callbacks.url:
        endpoints["callbacks.url"] = settings.callbacks.url
    for setting, url in endpoints.items():
        try:
            origin(url)
        except ValueError as error:
            raise ConfigError(setting, str(error)) from None
    uploads = GRAPH_UPLOAD_ORIGINS.get(origin(settings.microsoft.graph_url), ())
    return EgressPolicy.for_endpoints([*endpoints.values(), *uploads])


def _identities(
    settings: Settings, google_gate: GoogleOperationGate, egress: EgressGate
) -> dict[str, IdentityClient]:
    """An identity client for each provider whose OAuth app the settings configure."""
    identities: dict[str, IdentityClient] = {}
    if settings.microsoft.client_id:
        identities["microsoft"] = MicrosoftIdentity(settings.microsoft, egress)
    if settings.google.client_id:
        identities["google"] = GoogleIdentity(settings.google, google_gate, egress)
    return identities


def _providers(
    settings: Settings, google_gate: GoogleOperationGate, egress: EgressGate, clock: Clock
) -> dict[str, MailProvider]:
    """The mail transports, by provider name; both Google doors share one gate (LU-3), and
    every session sends only where ``egress`` allows (PP-5)."""
    return {
        "microsoft": GraphProvider(
            settings.microsoft.graph_url,
            ssl_context=_ssl_context(settings.microsoft.ca_file),
            timeout=ClientTimeout(total=settings.microsoft.request_timeout),
            egress=egress,
        ),
        "google": GmailProvider(
            google_gate,
            settings.google.gmail_url,
            ssl_context=_ssl_context(settings.google.ca_file),
            clock=clock,
            egress=egress,
        ),
    }


@dataclass
class App:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    scrubber: StorageScrubber
    registry: CollectorRegistry
    telemetry: PrometheusTelemetry
    keys: KeySource
    accounts: AccountStore
    account_service: AccountService
    mailboxes: MailboxStore
    jobs: JobStore
    queue: JobQueue
    vault: TokenVault
    tokens: AccessTokens
    identities: dict[str, IdentityClient]
    revocations: Revocations
    outbox: Outbox
    providers: dict[str, MailProvider]
    intake: JobIntake
    mailbox_service: MailboxService
    account_rights: AccountRights
    worker: Worker
    key_rotation: KeyRotation
    admin_sessions: AdminSessions
    violations: PolicyViolationLog
    egress: EgressGate
    """The gate every outbound client the app builds sends through (docs/privacy.md PP-5)."""
    retention: Retention
    audit_chain: AuditChain
    """Seals audit entries into their hash chains and verifies them (docs/privacy.md PP-3)."""
    support_grants: SupportGrantStore
    """Support-access grants (docs/privacy.md PP-3, LU-5)."""
    loops: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    """The background loops ``serve`` runs, by name; one that ended means not ready."""
    clock: Clock = utcnow
    """The time every component was given (the API's rate limits count in it too)."""

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        keys: KeySource | None = None,
        identities: Mapping[str, IdentityClient] | None = None,
        providers: Mapping[str, MailProvider] | None = None,
        clock: Clock = utcnow,
    ) -> App:
        """Every component, wired from ``settings``; ``keys``, ``identities`` (by provider
        name), ``providers`` (by provider name) and ``clock`` replace what the settings name,
        for tests. Nothing is connected or started until used."""
        engine = create_engine(settings.database)
        sessions = create_session_factory(engine)
        registry = CollectorRegistry()
        telemetry = PrometheusTelemetry(registry, version=_version())
        scrubber = StorageScrubber(
            engine, transaction_pooler=settings.database.transaction_pooler, telemetry=telemetry
        )
        accounts = AccountStore(sessions, clock)
        mailboxes = MailboxStore(sessions, clock)
        jobs = JobStore(
            sessions,
            clock,
            idempotency_window=dt.timedelta(hours=settings.retention.idempotency_hours),
            transaction_pooler=settings.database.transaction_pooler,
        )
        queue = JobQueue(
            sessions,
            clock,
            settings.worker.mailbox_limits(),
            transaction_pooler=settings.database.transaction_pooler,
        )
        keys = keys or key_source(settings)
        vault = TokenVault(sessions, keys, scrubber, clock)
        violations = PolicyViolationLog(accounts, telemetry)
        google_gate = GoogleOperationGate(settings.google.endpoints(), violations)
        egress = EgressGate(egress_policy(settings), violations)
        identities = dict(
            _identities(settings, google_gate, egress) if identities is None else identities
        )
        tokens = AccessTokens(vault, identities, telemetry, DatabaseLocks(engine))
        revocations = Revocations(
            sessions, vault, identities, accounts, scrubber, clock, telemetry=telemetry
        )
        providers = dict(
            _providers(settings, google_gate, egress, clock) if providers is None else providers
        )
        outbox = Outbox(sessions, clock)
        worker = Worker(
            queue,
            mailboxes,
            tokens,
            providers,
            settings.worker,
            telemetry,
            clock=clock,
            announce=lambda: announce(engine),
        )
        intake = JobIntake(
            jobs,
            lambda provider, mode, capabilities: (
                providers[provider].max_message_bytes(
                    "send" if mode == "send" else "draft", capabilities
                )
                if provider in providers
                else None
            ),
            telemetry,
            wake_worker=worker.wake,
            clock=clock,
        )
        redirect_uri = settings.server.public_url.rstrip("/") + CALLBACK_PATH
        mailbox_service = MailboxService(
            mailboxes,
            jobs,
            accounts,
            vault,
            tokens,
            identities,
            revocations,
            redirect_uri,
            clock,
            wake_worker=worker.wake,
        )
        support_grants = SupportGrantStore(sessions, clock)
        account_service = AccountService(accounts, support_grants)
        account_rights = AccountRights(
            AccountData(sessions, clock), mailbox_service, scrubber, wake_worker=worker.wake
        )
        schedule = RotationSchedule.from_settings(
            settings.keys.rotate_every_days, settings.keys.retire_grace_hours
        )
        key_rotation = KeyRotation(
            keys, vault, DatabaseLocks(engine), schedule, telemetry=telemetry
        )
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            scrubber=scrubber,
            registry=registry,
            telemetry=telemetry,
            keys=keys,
            accounts=accounts,
            account_service=account_service,
            mailboxes=mailboxes,
            jobs=jobs,
            queue=queue,
            vault=vault,
            tokens=tokens,
            identities=identities,
            revocations=revocations,
            outbox=outbox,
            providers=providers,
            intake=intake,
            mailbox_service=mailbox_service,
            account_rights=account_rights,
            worker=worker,
            key_rotation=key_rotation,
            admin_sessions=AdminSessions(account_service),
            violations=violations,
            egress=egress,
            retention=Retention(
                sessions, settings.retention, scrubber=scrubber, telemetry=telemetry, clock=clock
            ),
            clock=clock,
            audit_chain=AuditChain(engine, DatabaseLocks(engine), clock),
            support_grants=support_grants,
        )

    def check_pool_size(self) -> None:
        """Compare the PostgreSQL pool with what this process can hold at once: set the
        ``mailbox_worker_database_connections`` gauge and log one warning when the pool is
        smaller (docs/architecture.md#pool-sizing). Nothing on SQLite."""
        database = self.settings.database
        capacity = pool_capacity(database)
        if capacity is None:
            return
        demand = pool_demand(
            self.settings.worker.concurrency,
            key_rotation=self.settings.keys.rotate_every_days > 0,
            callbacks=bool(self.settings.callbacks.url),
        )
        self.telemetry.database_pool(capacity, demand.total)
        warning = pool_shortfall(database, demand)
        if warning is not None:
            log.warning("%s", warning)

    async def migrate(self, *, wait: float = 0.0) -> None:
        """Bring the schema to the newest migration. With ``wait`` > 0, a database that
        cannot be reached yet (a daemon starting beside it, or while it restarts) is tried
        again with backoff for up to ``wait`` seconds, each try logged without the driver's
        message; then ``DatabaseUnavailable`` (docs/deploy.md)."""
        if wait <= 0:
            await migrate.upgrade(self.engine)
            return
        retrying = AsyncRetrying(
            retry=retry_if_exception(is_database_unavailable),
            wait=wait_exponential(multiplier=0.5, max=5.0),
            stop=stop_after_delay(wait),
            before_sleep=_log_database_wait,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await migrate.upgrade(self.engine)
        except Exception as error:
            if is_database_unavailable(error):
                raise DatabaseUnavailable(
                    f"the database could not be reached within {wait:g} seconds"
                ) from None
            raise

    async def readiness(self) -> Mapping[str, bool]:
        """Named readiness checks: the database answers, its schema is current and every
        background loop ``serve`` started is still running (``<name>_loop``)."""
        checks = {"database": False, "migrations": False}
        checks.update({f"{name}_loop": not task.done() for name, task in self.loops.items()})
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            checks["database"] = True
            checks["migrations"] = not await migrate.pending(self.engine)
        except Exception as error:  # readiness reports, it does not raise
            log.warning("readiness check failed: %s", type(error).__name__)
        return checks

    def api_services(self) -> ApiServices:
        """What the HTTP API is given: its ports over this app's components."""
        return ApiServices(
            accounts=self.account_service,
            jobs=self.intake,
            mailboxes=self.mailbox_service,
            rights=self.account_rights,
            admin_sessions=self.admin_sessions,
            telemetry=self.telemetry,
            metrics_page=self.telemetry.render,
            ready=self.readiness,
            database_unavailable=is_database_unavailable,
            max_request_bytes=self.settings.server.max_request_bytes,
            body_timeout=self.settings.server.body_timeout,
            public_url=self.settings.server.public_url,
            rate_limits=self.settings.api,
            clock=self.clock,
        )

    def web_app(self) -> web.Application:
        return create_app(self.api_services())

    def due_listener(self) -> DueListener | None:
        """What wakes this process's worker on PostgreSQL when a job becomes due in any
        process (jobs/wakeups.py); None on SQLite and behind a transaction pooler, where
        ``LISTEN`` cannot hold (the worker polls)."""
        dsn = listen_dsn(self.settings.database.url)
        if dsn is None or self.settings.database.transaction_pooler:
            return None
        return DueListener(dsn, self.worker.wake)

    async def serve(
        self, stop: asyncio.Event, *, started: asyncio.Event | None = None, role: Role = "all"
    ) -> None:
        """Run what ``role`` names until ``stop`` is set; drain, then return."""
        self.check_pool_size()
        self.violations.bind(asyncio.get_running_loop())
        server = self.settings.server
        limits = ServerLimits(
            header_timeout=server.header_timeout,
            keepalive_timeout=server.keepalive_timeout,
            max_connections=server.max_connections,
        )
        web_app = self.web_app() if role != "worker" else create_operations_app(self.api_services())
        runner, _ = await start_server(web_app, server.host, server.port, limits)
        log.info(
            "%s: listening on %s port %d (public URL %s)",
            role,
            server.host,
            server.port,
            self.settings.server.public_url,
        )
        if started is not None:
            started.set()
        loops = self._loops(stop, role)
        self.loops = {name: asyncio.create_task(run, name=name) for name, run in loops.items()}
        try:
            await stop.wait()
        except asyncio.CancelledError:
            for task in self.loops.values():
                task.cancel()
            raise
        finally:
            # A loop that ended early was reported by readiness; shutting down still succeeds.
            outcomes = await asyncio.gather(*self.loops.values(), return_exceptions=True)
            for name, outcome in zip(self.loops, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    log.error(
                        "%s loop had ended: %s\n%s",
                        name,
                        type(outcome).__name__,
                        redacted_traceback(outcome),
                    )
            await runner.cleanup()

    def _loops(self, stop: asyncio.Event, role: Role) -> dict[str, Coroutine[object, object, None]]:
        """The background loops of ``role``: the worker (and its wake-ups) unless ``api``,
        the rest unless ``worker``."""
        loops: dict[str, Coroutine[object, object, None]] = {}
        if role != "api":
            loops["worker"] = self.worker.run(stop)
            listener = self.due_listener()
            if listener is not None:
                loops["job_notifications"] = listener.run(stop)
                self.worker.hears_every_enqueue = lambda: listener.listening
            elif listen_dsn(self.settings.database.url) is None:
                # SQLite: one daemon process, whose intake wakes its worker (a CLI command's
                # change waits for the poll, as it always did for an idle worker). Behind a
                # transaction pooler, with no listener, it hears only its own process.
                self.worker.hears_every_enqueue = lambda: True
        if role == "worker":
            return loops
        loops |= {
            "revocations": self.revocations.run(stop),
            "key_rotation": self.key_rotation.run(stop),
            "storage_scrub": self.scrubber.run(stop),
            "retention": self.retention.run(stop),
            "audit_seal": Periodic(
                "audit sealing",
                self.audit_chain.seal,
                AUDIT_SEAL_INTERVAL,
                name="audit_seal",
                telemetry=self.telemetry,
                database_unavailable=is_database_unavailable,
            ).run(stop),
        }
        if self.settings.callbacks.url:
            # Built here rather than by CallbackDispatcher.run, to count its failed passes.
            callbacks = Periodic(
                "callback delivery",
                self.callback_dispatcher().deliver_due,
                self.settings.callbacks.poll_interval,
                name="callbacks",
                telemetry=self.telemetry,
                database_unavailable=is_database_unavailable,
            )
            loops["callbacks"] = callbacks.run(stop)
        return loops

    def callback_dispatcher(self) -> CallbackDispatcher:
        """What delivers outbox events to ``callbacks.url``, through the egress gate."""
        return CallbackDispatcher(
            self.outbox,
            self.settings.callbacks,
            self.telemetry,
            tracing=[egress_tracing(self.egress)],
        )

    async def close(self) -> None:
        for identity in self.identities.values():
            identity.close()
        for provider in self.providers.values():
            await provider.close()
        await self.violations.flush()
        await self.engine.dispose()


def _log_database_wait(state: RetryCallState) -> None:
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning(
        "database not reachable yet (try %d); trying again in %.1f s", state.attempt_number, wait
    )
