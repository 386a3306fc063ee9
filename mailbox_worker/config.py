"""Typed, frozen settings, read once at the edge.

Sources, later ones winning: the defaults below (documented in ``config/mailbox-worker.toml``),
a TOML file (``--config`` or ``MAILBOX_WORKER_CONFIG``), then environment variables named
``MAILBOX_WORKER_<SECTION>__<KEY>`` (e.g. ``MAILBOX_WORKER_DATABASE__URL``). A wrong or
unknown setting raises ``ConfigError`` naming it; the CLI prints that one line and exits.
``MAILBOX_WORKER_KEYS`` (the keys themselves, for ``keys.source = "env"``) is read here too,
into ``keys.env_value``: nothing else reads the environment. Each component owns the frozen
dataclass of its own section (``DatabaseSettings`` in ``db/engine.py``, ``WorkerSettings`` in
``jobs/worker.py``, …) and receives only that from the composition root; this module composes
them, and only the root and the CLI import it (an import-linter layer in ``pyproject.toml``).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mailbox_worker.api.rate_limits import RateLimitSettings
from mailbox_worker.db.engine import DatabaseSettings
from mailbox_worker.db.retention import MAX_EVENTS_DAYS, RetentionSettings
from mailbox_worker.errors import ConfigError
from mailbox_worker.events.delivery import CallbackSettings
from mailbox_worker.jobs.worker import WorkerSettings
from mailbox_worker.policy.google_operations import GMAIL_OVER_SMTP_REFUSED
from mailbox_worker.policy.scopes import BROADER_THAN_NEEDED
from mailbox_worker.tokens.google import GoogleSettings
from mailbox_worker.tokens.keys.env_source import ENV_VAR
from mailbox_worker.tokens.microsoft import MicrosoftSettings

__all__ = [
    "ENV_PREFIX",
    "KEYS_VARIABLE",
    "CallbackSettings",
    "DatabaseSettings",
    "GoogleSettings",
    "KeySettings",
    "LoggingSettings",
    "MicrosoftSettings",
    "RateLimitSettings",
    "RetentionSettings",
    "ServerSettings",
    "Settings",
    "WorkerSettings",
    "load_settings",
    "require_microsoft_app",
]

ENV_PREFIX = "MAILBOX_WORKER_"
KEYS_VARIABLE = ENV_VAR
"""The variable ``EnvKeySource`` reads; the only one read outside ``<SECTION>__<KEY>``."""
"""The environment variable the ``env`` key source reads (``id1:base64,id2:base64``)."""
MAX_ROTATE_EVERY_DAYS = 365
MAX_RETIRE_GRACE_HOURS = 24 * 7


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    max_request_bytes: int = 16 * 1024 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keepalive_timeout: float = 75.0
    max_connections: int = 512


@dataclass(frozen=True)
class KeySettings:
    source: str = "keyring"
    keyring_service: str = "mailbox-worker"
    file: str = "var/keys.json"
    create_if_missing: bool = False
    rotate_every_days: int = 30
    retire_grace_hours: int = 24
    env_value: str = field(default="", repr=False)
    """The keys themselves when ``source`` is ``env``: read from ``MAILBOX_WORKER_KEYS``."""


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "INFO"
    json: bool = False


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    server: ServerSettings = ServerSettings()
    api: RateLimitSettings = field(default_factory=RateLimitSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    keys: KeySettings = KeySettings()
    microsoft: MicrosoftSettings = field(default_factory=MicrosoftSettings)
    google: GoogleSettings = field(default_factory=GoogleSettings)
    callbacks: CallbackSettings = field(default_factory=CallbackSettings)
    logging: LoggingSettings = LoggingSettings()
    retention: RetentionSettings = field(default_factory=RetentionSettings)


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Build validated settings from defaults, an optional TOML file and the environment."""
    environ = os.environ if environ is None else environ
    if path is None and environ.get(ENV_PREFIX + "CONFIG"):
        path = Path(environ[ENV_PREFIX + "CONFIG"])
    raw: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            with path.open("rb") as handle:
                document = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError("config", f"file {str(path)!r} does not exist") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError("config", f"{path} is not valid TOML ({error})") from None
        for section, values in document.items():
            if not isinstance(values, dict):
                raise ConfigError(section, "must be a [section] table")
            raw.setdefault(section, {}).update(values)
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        raw.setdefault(section, {})[key] = value
    if environ.get(KEYS_VARIABLE):
        raw.setdefault("keys", {})["env_value"] = environ[KEYS_VARIABLE]
    settings = _build(Settings, raw)
    _validate(settings)
    return settings


def _build(cls: type[Settings], raw: dict[str, dict[str, Any]]) -> Settings:
    sections: dict[str, Any] = {}
    known = {section.name: section for section in dataclasses.fields(cls)}
    for section_name, values in raw.items():
        if section_name not in known:
            raise ConfigError(section_name, "unknown section")
        section_type = typing.get_type_hints(cls)[section_name]
        section_fields = {item.name: item for item in dataclasses.fields(section_type)}
        hints = typing.get_type_hints(section_type)
        converted: dict[str, Any] = {}
        for key, value in values.items():
            if key not in section_fields:
                raise ConfigError(f"{section_name}.{key}", "unknown setting")
            converted[key] = _coerce(f"{section_name}.{key}", hints[key], value)
        sections[section_name] = section_type(**converted)
    return cls(**sections)


def _coerce(setting: str, hint: Any, value: Any) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on"}:
            return True
        if isinstance(value, str) and value.lower() in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(setting, "must be true or false")
    if hint is int or hint is float:
        if isinstance(value, bool):
            raise ConfigError(setting, f"must be a number, not {value!r}")
        try:
            return hint(value)
        except (TypeError, ValueError):
            raise ConfigError(setting, "must be a number") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(setting, "must be a string")
        return value
    if typing.get_origin(hint) is tuple or isinstance(hint, types.GenericAlias):
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(setting, "must be a list of strings")
        return tuple(value)
    raise ConfigError(setting, f"unsupported type {hint!r}")  # pragma: no cover


def _validate(settings: Settings) -> None:
    if not settings.database.url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ConfigError(
            "database.url", "must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
        )
    if settings.database.pool_size < 1:
        raise ConfigError("database.pool_size", "must be at least 1")
    if settings.database.max_overflow < 0:
        raise ConfigError("database.max_overflow", "must be 0 or more")
    if not 0 <= settings.server.port <= 65535:
        raise ConfigError("server.port", "must be between 0 and 65535")
    if urlsplit(settings.server.public_url).scheme not in {"http", "https"}:
        raise ConfigError("server.public_url", "must be an http(s) URL")
    for name in ("header_timeout", "body_timeout", "keepalive_timeout"):
        if getattr(settings.server, name) <= 0:
            raise ConfigError(f"server.{name}", "must be positive")
    for name in ("max_request_bytes", "max_connections"):
        if getattr(settings.server, name) < 1:
            raise ConfigError(f"server.{name}", "must be at least 1")
    for name in ("concurrency", "per_mailbox_concurrency", "max_attempts"):
        if getattr(settings.worker, name) < 1:
            raise ConfigError(f"worker.{name}", "must be at least 1")
    for name in (
        "microsoft_rate_per_minute",
        "microsoft_daily_recipients",
        "google_rate_per_minute",
        "google_daily_recipients",
    ):
        if getattr(settings.worker, name) < 0:
            raise ConfigError(f"worker.{name}", "must be 0 (no limit) or more")
    for name in ("poll_interval", "lease_seconds", "retry_initial", "retry_max"):
        if getattr(settings.worker, name) <= 0:
            raise ConfigError(f"worker.{name}", "must be positive")
    if settings.keys.source not in {"keyring", "file", "env"}:
        raise ConfigError("keys.source", "must be one of keyring, file, env")
    if not 0 <= settings.keys.rotate_every_days <= MAX_ROTATE_EVERY_DAYS:
        raise ConfigError(
            "keys.rotate_every_days",
            f"must be between 1 and {MAX_ROTATE_EVERY_DAYS} days, or 0 to turn scheduled "
            "rotation off (it bounds how long database copies stay decryptable)",
        )
    if not 1 <= settings.keys.retire_grace_hours <= MAX_RETIRE_GRACE_HOURS:
        raise ConfigError(
            "keys.retire_grace_hours", f"must be between 1 and {MAX_RETIRE_GRACE_HOURS} hours"
        )
    for name in ("authority", "graph_url"):
        if urlsplit(getattr(settings.microsoft, name)).scheme != "https":
            raise ConfigError(f"microsoft.{name}", "must be an https URL")
    for name in ("auth_url", "token_url", "revoke_url", "userinfo_url", "gmail_url"):
        if urlsplit(getattr(settings.google, name)).scheme != "https":
            raise ConfigError(f"google.{name}", "must be an https URL")
    if urlsplit(settings.google.gmail_url).path not in ("", "/"):
        # Uploads keep only its host and port (docs/providers.md D7): a path would be lost.
        raise ConfigError("google.gmail_url", "must be an origin (https://host[:port]/), no path")
    if settings.google.transport == "smtp":
        raise ConfigError("google.transport", GMAIL_OVER_SMTP_REFUSED)
    if settings.google.transport != "gmail_api":
        raise ConfigError("google.transport", "must be gmail_api")
    for section in ("microsoft", "google"):
        ca_file = getattr(settings, section).ca_file
        if ca_file and not Path(ca_file).is_file():
            raise ConfigError(f"{section}.ca_file", "file does not exist")
    broader = BROADER_THAN_NEEDED.intersection(
        scope.lower() for scope in settings.microsoft.extra_scopes
    )
    if broader:
        raise ConfigError(
            "microsoft.extra_scopes",
            f"asks for {', '.join(sorted(broader))}, broader than sending invoices needs",
        )
    if settings.callbacks.url:
        if urlsplit(settings.callbacks.url).scheme not in {"http", "https"}:
            raise ConfigError("callbacks.url", "must be an http(s) URL")
        if not settings.callbacks.secret:
            raise ConfigError("callbacks.secret", "is required to sign callbacks")
    _validate_retention(settings.retention)
    _validate_rate_limits(settings.api)
    if settings.logging.level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError("logging.level", "must be DEBUG, INFO, WARNING or ERROR")


def _validate_retention(retention: RetentionSettings) -> None:
    if not 1 <= retention.events_days <= MAX_EVENTS_DAYS:
        raise ConfigError(
            "retention.events_days",
            f"must be between 1 and {MAX_EVENTS_DAYS} days: traces are kept at most "
            f"{MAX_EVENTS_DAYS} days (docs/privacy.md PP-4)",
        )
    if not 0 <= retention.content_days <= MAX_EVENTS_DAYS:
        raise ConfigError("retention.content_days", f"must be between 0 and {MAX_EVENTS_DAYS} days")
    if retention.batch_size < 1:
        raise ConfigError("retention.batch_size", "must be at least 1")
    if retention.interval <= 0:
        raise ConfigError("retention.interval", "must be positive")
    if retention.pause < 0:
        raise ConfigError("retention.pause", "must be 0 or more")
    if not 1 <= retention.idempotency_hours <= retention.events_days * 24:
        raise ConfigError(
            "retention.idempotency_hours",
            "must be between 1 hour and retention.events_days: a key is a trace of the request",
        )


def _validate_rate_limits(api: RateLimitSettings) -> None:
    for name in ("rate_limit_per_second", "failed_auth_limit"):
        if getattr(api, name) < 0:
            raise ConfigError(f"api.{name}", "must be 0 (no limit) or more")
    if api.rate_limit_per_second > 0 and api.rate_limit_burst < 1:
        raise ConfigError("api.rate_limit_burst", "must be at least 1")
    for name in ("failed_auth_window", "failed_auth_penalty", "failed_auth_max_penalty"):
        if getattr(api, name) <= 0:
            raise ConfigError(f"api.{name}", "must be positive")
    if api.failed_auth_max_penalty < api.failed_auth_penalty:
        raise ConfigError("api.failed_auth_max_penalty", "must be at least failed_auth_penalty")
    if api.max_tracked < 1:
        raise ConfigError("api.max_tracked", "must be at least 1")


def require_microsoft_app(settings: MicrosoftSettings) -> None:
    """Raise unless a Microsoft OAuth app (client id and secret) is configured."""
    if not settings.client_id:
        raise ConfigError("microsoft.client_id", "is required to connect Microsoft mailboxes")
    if not settings.client_secret:
        raise ConfigError(
            "microsoft.client_secret",
            "is required (set MAILBOX_WORKER_MICROSOFT__CLIENT_SECRET)",
        )
