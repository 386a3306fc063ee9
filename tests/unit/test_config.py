from __future__ import annotations

from pathlib import Path

import pytest

from mailbox_worker.config import Settings, load_settings
from mailbox_worker.errors import ConfigError

SHIPPED = Path(__file__).parents[2] / "config" / "mailbox-worker.toml"


def test_shipped_file_documents_exactly_the_defaults() -> None:
    assert load_settings(SHIPPED, environ={}) == Settings()


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[worker]\nconcurrency = 3\n[server]\nport = 9000\n")
    settings = load_settings(
        path, environ={"MAILBOX_WORKER_WORKER__CONCURRENCY": "5", "MAILBOX_WORKER_KEYS": "x"}
    )
    assert settings.worker.concurrency == 5
    assert settings.server.port == 9000


def test_config_file_named_by_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[logging]\nlevel = "DEBUG"\n')
    assert load_settings(environ={"MAILBOX_WORKER_CONFIG": str(path)}).logging.level == "DEBUG"


@pytest.mark.parametrize(
    ("environ", "setting"),
    [
        ({"MAILBOX_WORKER_WORKER__CONCURRENCY": "many"}, "worker.concurrency"),
        ({"MAILBOX_WORKER_WORKER__CONCURRENCY": "0"}, "worker.concurrency"),
        ({"MAILBOX_WORKER_SERVER__PORT": "70000"}, "server.port"),
        ({"MAILBOX_WORKER_SERVER__PROT": "80"}, "server.prot"),
        ({"MAILBOX_WORKER_SERVER__HEADER_TIMEOUT": "0"}, "server.header_timeout"),
        ({"MAILBOX_WORKER_SERVER__BODY_TIMEOUT": "-1"}, "server.body_timeout"),
        ({"MAILBOX_WORKER_SERVER__KEEPALIVE_TIMEOUT": "0"}, "server.keepalive_timeout"),
        ({"MAILBOX_WORKER_SERVER__MAX_CONNECTIONS": "0"}, "server.max_connections"),
        ({"MAILBOX_WORKER_SERVER__MAX_CONNECTIONS": "lots"}, "server.max_connections"),
        ({"MAILBOX_WORKER_NOPE__X": "1"}, "nope"),
        ({"MAILBOX_WORKER_DATABASE__URL": "mysql://x"}, "database.url"),
        ({"MAILBOX_WORKER_KEYS__SOURCE": "vault"}, "keys.source"),
        ({"MAILBOX_WORKER_KEYS__ROTATE_EVERY_DAYS": "-1"}, "keys.rotate_every_days"),
        ({"MAILBOX_WORKER_KEYS__ROTATE_EVERY_DAYS": "366"}, "keys.rotate_every_days"),
        ({"MAILBOX_WORKER_KEYS__ROTATE_EVERY_DAYS": "monthly"}, "keys.rotate_every_days"),
        ({"MAILBOX_WORKER_KEYS__RETIRE_GRACE_HOURS": "0"}, "keys.retire_grace_hours"),
        ({"MAILBOX_WORKER_KEYS__RETIRE_GRACE_HOURS": "169"}, "keys.retire_grace_hours"),
        ({"MAILBOX_WORKER_DATABASE__ECHO": "maybe"}, "database.echo"),
        ({"MAILBOX_WORKER_RETENTION__CONTENT_DAYS": "-1"}, "retention.content_days"),
        ({"MAILBOX_WORKER_RETENTION__BATCH_SIZE": "0"}, "retention.batch_size"),
        ({"MAILBOX_WORKER_RETENTION__INTERVAL": "0"}, "retention.interval"),
        ({"MAILBOX_WORKER_RETENTION__PAUSE": "-1"}, "retention.pause"),
        ({"MAILBOX_WORKER_RETENTION__IDEMPOTENCY_HOURS": "0"}, "retention.idempotency_hours"),
        (
            {
                "MAILBOX_WORKER_RETENTION__EVENTS_DAYS": "1",
                "MAILBOX_WORKER_RETENTION__IDEMPOTENCY_HOURS": "25",
            },
            "retention.idempotency_hours",
        ),
        ({"MAILBOX_WORKER_MICROSOFT__AUTHORITY": "http://login"}, "microsoft.authority"),
        (
            {"MAILBOX_WORKER_MICROSOFT__EXTRA_SCOPES": "https://graph.microsoft.com/Mail.Read"},
            "microsoft.extra_scopes",
        ),
    ],
)
def test_a_wrong_setting_is_named(environ: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)
    assert caught.value.setting == setting
    assert "\n" not in str(caught.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.toml", environ={})


def test_unknown_key_in_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[worker]\nconcurency = 3\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert caught.value.setting == "worker.concurency"


def test_secret_is_not_in_repr() -> None:
    settings = load_settings(environ={"MAILBOX_WORKER_MICROSOFT__CLIENT_SECRET": "s3cr3t-value"})
    assert settings.microsoft.client_secret == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings)


def test_scheduled_key_rotation_defaults_to_30_days_and_0_turns_it_off() -> None:
    assert (Settings().keys.rotate_every_days, Settings().keys.retire_grace_hours) == (30, 24)
    settings = load_settings(environ={"MAILBOX_WORKER_KEYS__ROTATE_EVERY_DAYS": "0"})
    assert settings.keys.rotate_every_days == 0


def test_gmail_over_smtp_is_refused_saying_why() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(environ={"MAILBOX_WORKER_GOOGLE__TRANSPORT": "smtp"})
    assert refused.value.setting == "google.transport"
    assert "https://mail.google.com/" in refused.value.message
    assert "LU-1" in refused.value.message


@pytest.mark.parametrize(
    "url", ["http://gmail.googleapis.com/", "https://proxy.example/gmail-api/"]
)
def test_the_gmail_url_is_an_https_origin(url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(environ={"MAILBOX_WORKER_GOOGLE__GMAIL_URL": url})
    assert refused.value.setting == "google.gmail_url"


def test_gmail_drafts_can_be_turned_off_from_the_environment() -> None:
    settings = load_settings(environ={"MAILBOX_WORKER_GOOGLE__DRAFTS": "false"})
    assert settings.google.drafts is False
    assert Settings().google.drafts is True


@pytest.mark.parametrize("days", ["91", "365", "0"])
def test_traces_cannot_be_kept_beyond_90_days(days: str) -> None:
    """docs/privacy.md PP-4: the period may be configured shorter, never longer."""
    with pytest.raises(ConfigError, match="at most 90 days") as caught:
        load_settings(environ={"MAILBOX_WORKER_RETENTION__EVENTS_DAYS": days})
    assert caught.value.setting == "retention.events_days"


def test_retention_defaults_to_90_days_of_traces_and_7_days_of_content() -> None:
    retention = load_settings(environ={"MAILBOX_WORKER_RETENTION__EVENTS_DAYS": "30"}).retention
    assert (retention.events_days, retention.content_days) == (30, 7)
    assert Settings().retention.events_days == 90


def test_idempotency_keys_are_kept_24_hours_by_default_and_up_to_the_traces_period() -> None:
    assert Settings().retention.idempotency_hours == 24
    environ = {
        "MAILBOX_WORKER_RETENTION__EVENTS_DAYS": "2",
        "MAILBOX_WORKER_RETENTION__IDEMPOTENCY_HOURS": "48",
    }
    assert load_settings(environ=environ).retention.idempotency_hours == 48
