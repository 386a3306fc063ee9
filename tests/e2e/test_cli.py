"""The CLI as a user meets it: one clear line for a wrong setting, keys shown once, rotation."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mailbox_worker.config import DatabaseSettings
from mailbox_worker.db.accounts import AccountStore
from mailbox_worker.db.engine import create_engine, create_session_factory
from mailbox_worker.db.mailboxes import MailboxStore
from mailbox_worker.db.support_grants import SupportGrantStore
from mailbox_worker.jobs.queue import JobQueue
from mailbox_worker.jobs.store import JobStore, NewJob

pytestmark = pytest.mark.e2e


def run(environment: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailbox_worker.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def environment(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOX_WORKER_")}
    clean.update(
        {
            "MAILBOX_WORKER_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
            "MAILBOX_WORKER_KEYS__SOURCE": "file",
            "MAILBOX_WORKER_KEYS__FILE": str(tmp_path / "keys.json"),
            "MAILBOX_WORKER_KEYS__CREATE_IF_MISSING": "true",
        }
    )
    return clean


@pytest.mark.parametrize(
    ("variable", "value", "setting"),
    [
        ("MAILBOX_WORKER_WORKER__CONCURRENCY", "zero", "worker.concurrency"),
        ("MAILBOX_WORKER_DATABASE__URL", "mysql://db", "database.url"),
        ("MAILBOX_WORKER_SERVER__PORTT", "1", "server.portt"),
    ],
)
def test_a_wrong_setting_stops_start_up_with_one_line(
    environment: dict[str, str], variable: str, value: str, setting: str
) -> None:
    done = run({**environment, variable: value}, "serve")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert setting in lines[0]
    assert "Traceback" not in done.stderr


def test_accounts_keys_and_key_rotation(environment: dict[str, str]) -> None:
    account = run(environment, "accounts", "create", "Contoso").stdout.strip()
    assert account.startswith("acc_")
    created = run(environment, "keys", "create", "--account", account, "--permissions", "jobs:read")
    assert created.returncode == 0
    assert created.stdout.startswith("mwk_")
    assert "shown once" in created.stderr
    refused = run(environment, "keys", "create", "--account", account, "--permissions", "root")
    assert refused.returncode == 2
    rotated = run(environment, "keys", "rotate")
    assert rotated.returncode == 0
    assert "active key kek-" in rotated.stdout
    rotated = run(environment, "keys", "rotate")  # the first rotate created the first key
    new_key = rotated.stdout.split()[2].rstrip(";")
    status = run(environment, "keys", "status").stdout.splitlines()
    assert status[0] == "KEY\tSTATE\tCREATED\tSUPERSEDED\tDATA KEYS\tRETIRABLE FROM"
    [old_row, new_row] = [line.split("\t") for line in status[1:3]]
    assert old_row[1] == "superseded" and old_row[3] == new_row[2] and old_row[5] != "-"
    assert new_row[:2] == [new_key, "active"] and new_row[3:] == ["-", "0", "-"]
    assert re.fullmatch(r"next rotation: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", status[3])
    retired = run(environment, "keys", "retire", "--id", old_row[0])
    assert retired.stdout.strip() == f"retired {old_row[0]}"
    assert "superseded less than keys.retire_grace_hours ago" in retired.stderr


def test_key_status_says_when_rotation_is_not_scheduled(environment: dict[str, str]) -> None:
    off = {**environment, "MAILBOX_WORKER_KEYS__ROTATE_EVERY_DAYS": "0"}
    assert "next rotation: none yet" in run(off, "keys", "status").stdout
    assert run(off, "keys", "rotate").returncode == 0
    status = run(off, "keys", "status")
    assert status.returncode == 0
    assert status.stdout.splitlines()[-1].startswith("next rotation: not scheduled")


def test_env_keys_are_rewrapped_not_rotated_by_the_cli(environment: dict[str, str]) -> None:
    env = {
        **environment,
        "MAILBOX_WORKER_KEYS__SOURCE": "env",
        "MAILBOX_WORKER_KEYS": "k2:" + "B" * 43 + "=,k1:" + "A" * 43 + "=",
    }
    rotated = run(env, "keys", "rotate")
    assert rotated.returncode == 2
    assert "MAILBOX_WORKER_KEYS" in rotated.stderr
    rewrapped = run(env, "keys", "rewrap")
    assert rewrapped.returncode == 0
    assert rewrapped.stdout.strip() == "active key k2; re-wrapped 0 data keys"
    status = run(env, "keys", "status").stdout.splitlines()
    assert [row.split("\t")[:2] for row in status[1:3]] == [["k2", "active"], ["k1", "superseded"]]
    assert status[3].startswith("next rotation: not scheduled")


def test_accounts_origins_are_listed_added_normalised_and_removed(
    environment: dict[str, str],
) -> None:
    account = run(environment, "accounts", "create", "Contoso").stdout.strip()
    assert run(environment, "accounts", "origins", "--account", account).stdout == ""
    added = run(
        environment,
        "accounts",
        "origins",
        "--account",
        account,
        "--add",
        "https://Invoicing.example:443",
        "--add",
        "http://localhost:3000",
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines() == ["http://localhost:3000", "https://invoicing.example"]
    removed = run(
        environment,
        "accounts",
        "origins",
        "--account",
        account,
        "--remove",
        "http://LOCALHOST:3000",
    )
    assert removed.stdout.splitlines() == ["https://invoicing.example"]
    refused = run(
        environment, "accounts", "origins", "--account", account, "--add", "http://evil.example"
    )
    assert refused.returncode == 2
    assert "'http://evil.example' must use https" in refused.stderr
    assert "Traceback" not in refused.stderr
    unknown = run(environment, "accounts", "origins", "--account", "acc_nobody")
    assert (unknown.returncode, unknown.stderr.strip()) == (
        1,
        "mailbox-worker: no account acc_nobody",
    )


async def _unknown_job(database_url: str) -> str:
    """An account, a connected mailbox and a job left ``unknown`` by a worker that died."""
    engine = create_engine(DatabaseSettings(url=database_url))
    try:
        sessions = create_session_factory(engine)
        accounts, mailboxes, jobs = (
            AccountStore(sessions),
            MailboxStore(sessions),
            JobStore(sessions),
        )
        account = await accounts.create_account("acme")
        mailbox = await mailboxes.create(account.id, "microsoft", ["send"], actor="test")
        await mailboxes.mark_connected(mailbox.id, "billing@contoso.example", ["Mail.Send"])
        job, _ = await jobs.enqueue(
            NewJob(
                account.id, mailbox.id, "send", {"subject": "Invoice"}, "digest", "contoso.example"
            )
        )
        # A worker that died in flight: it started the attempt, then its lease ran out.
        queue = JobQueue(sessions)
        [claimed] = await queue.claim("dead-worker", 1, dt.timedelta(minutes=1))
        assert await queue.start_attempt(claimed.lease)
        await queue.renew_leases([claimed.lease], dt.timedelta(minutes=-1))
        await queue.recover_expired_leases()
        return job.id
    finally:
        await engine.dispose()


def test_jobs_settles_an_unknown_job_once(environment: dict[str, str]) -> None:
    assert run(environment, "migrate").returncode == 0
    job_id = asyncio.run(_unknown_job(environment["MAILBOX_WORKER_DATABASE__URL"]))

    refused = run(environment, "jobs", "retry", "--id", job_id)
    retried = run(environment, "jobs", "retry", "--id", job_id, "--accept-duplicate-risk")
    not_unknown = run(environment, "jobs", "resolve", "--id", job_id)
    missing = run(environment, "jobs", "cancel", "--id", "job_missing")

    assert refused.returncode == 2 and "--accept-duplicate-risk" in refused.stderr
    assert (retried.returncode, retried.stdout) == (0, f"{job_id} queued\n")
    assert not_unknown.returncode == 1 and "is queued, not unknown" in not_unknown.stderr
    assert missing.returncode == 1 and "no job job_missing" in missing.stderr


async def _two_jobs(database_url: str) -> tuple[str, str, str]:
    """``(account id, a queued job, a job left unknown)``, on one connected mailbox."""
    unknown = await _unknown_job(database_url)
    engine = create_engine(DatabaseSettings(url=database_url))
    try:
        jobs = JobStore(create_session_factory(engine))
        job = await jobs.get(unknown)
        assert job is not None
        queued, _ = await jobs.enqueue(
            NewJob(
                job.account_id,
                job.mailbox_id,
                "send",
                {"subject": "Invoice 2", "to": [{"address": "ap@fabrikam.example"}]},
                "digest-2",
                "contoso.example",
                reference="INV-2",
            )
        )
        return job.account_id, queued.id, unknown
    finally:
        await engine.dispose()


def test_jobs_list_show_and_stats_give_metadata_only(environment: dict[str, str]) -> None:
    assert run(environment, "migrate").returncode == 0
    account_id, queued, unknown = asyncio.run(
        _two_jobs(environment["MAILBOX_WORKER_DATABASE__URL"])
    )

    listed = run(environment, "jobs", "list", "--json")
    only_unknown = run(environment, "jobs", "list", "--state", "unknown")
    by_reference = run(environment, "jobs", "list", "--reference", "INV-2", "--json")
    shown = run(environment, "jobs", "show", "--id", unknown, "--json")
    stats = run(environment, "jobs", "stats", "--json")
    missing = run(environment, "jobs", "show", "--id", "job_missing")
    no_id = run(environment, "jobs", "show")

    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(row["id"], row["state"]) for row in rows] == [(queued, "queued"), (unknown, "unknown")]
    assert {row["account_id"] for row in rows} == {account_id}
    header, *lines = only_unknown.stdout.splitlines()
    assert header.split("\t")[:5] == ["ID", "ACCOUNT_ID", "MAILBOX_ID", "MODE", "STATE"]
    assert [line.split("\t")[0] for line in lines] == [unknown]
    assert [row["id"] for row in json.loads(by_reference.stdout)] == [queued]
    job = json.loads(shown.stdout)
    assert (job["state"], job["last_error_code"]) == ("unknown", "worker_lost")
    assert [event["to_state"] for event in job["events"]] == [
        "queued",
        "running",
        None,
        "unknown",
    ]
    counts = json.loads(stats.stdout)
    assert counts["jobs_by_state"]["queued"] == 1 and counts["jobs_by_state"]["unknown"] == 1
    assert counts["oldest_due_queued_seconds"] >= 0
    assert (missing.returncode, no_id.returncode) == (1, 2)
    # Metadata only: nothing of the message (subject, recipient) in any answer.
    for answer in (listed, only_unknown, by_reference, shown, stats):
        assert "Invoice" not in answer.stdout and "fabrikam" not in answer.stdout


def test_jobs_cancel_takes_queued_and_unknown_jobs(environment: dict[str, str]) -> None:
    assert run(environment, "migrate").returncode == 0
    _, queued, unknown = asyncio.run(_two_jobs(environment["MAILBOX_WORKER_DATABASE__URL"]))

    first = run(environment, "jobs", "cancel", "--id", queued)
    again = run(environment, "jobs", "cancel", "--id", queued)
    settled = run(environment, "jobs", "cancel", "--id", unknown)

    assert (first.returncode, first.stdout) == (0, f"{queued} cancelled\n")
    assert again.returncode == 1 and "only queued, held or unknown jobs cancel" in again.stderr
    assert (settled.returncode, settled.stdout) == (0, f"{unknown} cancelled\n")


def test_config_show_masks_every_secret(environment: dict[str, str]) -> None:
    secrets = {
        "MAILBOX_WORKER_MICROSOFT__CLIENT_SECRET": "ms-secret-value-123",
        "MAILBOX_WORKER_CALLBACKS__SECRET": "callback-secret-456",
        "MAILBOX_WORKER_DATABASE__URL": "postgresql+asyncpg://app:db-password-789@db:5432/mw",
    }
    environment = {**environment, **secrets}

    checked = run(environment, "config", "check")
    shown = run(environment, "config", "show")
    as_json = run(environment, "config", "show", "--json")

    assert (checked.returncode, checked.stdout) == (0, "configuration is valid\n")
    assert shown.returncode == 0 and "[microsoft]" in shown.stdout
    for secret in ("ms-secret-value-123", "callback-secret-456", "db-password-789"):
        assert secret not in shown.stdout + as_json.stdout
    document = json.loads(as_json.stdout)
    assert document["microsoft"]["client_secret"] == "********"
    assert document["callbacks"]["secret"] == "********"
    assert document["database"]["url"] == "postgresql+asyncpg://app:***@db:5432/mw"
    assert document["worker"]["concurrency"] == 8


def test_accounts_pause_resume_export_and_erase(environment: dict[str, str]) -> None:
    account = run(environment, "accounts", "create", "Contoso").stdout.strip()
    key = run(environment, "keys", "create", "--account", account).stdout.strip()

    paused = run(environment, "accounts", "pause", "--account", account, "--json")
    assert paused.returncode == 0
    assert json.loads(paused.stdout)["paused"] is True
    resumed = run(environment, "accounts", "resume", "--account", account)
    assert (resumed.returncode, resumed.stdout.strip()) == (0, f"{account} active")
    exported = run(environment, "accounts", "export", "--account", account)
    assert exported.returncode == 0
    document = json.loads(exported.stdout)
    assert document["account"]["id"] == account
    assert [action["action"] for action in document["audit_events"]][-2:] == [
        "account.paused",
        "account.resumed",
    ]
    assert key not in exported.stdout

    unconfirmed = run(environment, "accounts", "erase", "--account", account)
    assert unconfirmed.returncode == 2
    assert "--yes" in unconfirmed.stderr
    erased = run(environment, "accounts", "erase", "--account", account, "--yes", "--json")
    assert erased.returncode == 0
    assert json.loads(erased.stdout)["deleted"]["accounts"] == 1
    gone = run(environment, "accounts", "export", "--account", account)
    assert gone.returncode == 1
    assert f"no account {account}" in gone.stderr
    assert run(environment, "accounts", "pause").returncode == 2


def test_audit_verify_passes_then_names_an_altered_entry(
    environment: dict[str, str], tmp_path: Path
) -> None:
    account = run(environment, "accounts", "create", "Contoso").stdout.strip()
    assert run(environment, "keys", "create", "--account", account).returncode == 0
    database = tmp_path / "cli.db"
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        # Old enough to seal now (the sealer leaves the last minute's entries to settle).
        connection.execute("UPDATE audit_events SET at = datetime(at, '-1 hour')")

    verified = run(environment, "audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.strip() == "ok, 2 entries in 1 chains"

    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        [(entry_id,)] = connection.execute("SELECT max(id) FROM audit_events").fetchall()
        connection.execute(
            "UPDATE audit_events SET detail = '{\"permissions\": []}' WHERE id = ?", (entry_id,)
        )
    altered = run(environment, "audit", "verify")
    assert altered.returncode == 1
    assert f"audit entry {entry_id} (chain {account})" in altered.stderr
    assert json.loads(run(environment, "audit", "verify", "--json").stdout)["ok"] is False


async def _granted(database_url: str, job_id: str, hours: int) -> None:
    """Grant support access to the job's account (as its admin would through the API)."""
    engine = create_engine(DatabaseSettings(url=database_url))
    try:
        sessions = create_session_factory(engine)
        job = await JobStore(sessions).get(job_id)
        assert job is not None
        await SupportGrantStore(sessions).grant(job.account_id, "key_admin", hours, "ticket 1")
    finally:
        await engine.dispose()


def test_content_and_mailbox_details_only_under_a_support_grant(
    environment: dict[str, str],
) -> None:
    assert run(environment, "migrate").returncode == 0
    url = environment["MAILBOX_WORKER_DATABASE__URL"]
    job_id = asyncio.run(_unknown_job(url))
    mailbox_id = json.loads(run(environment, "jobs", "show", "--id", job_id, "--json").stdout)[
        "mailbox_id"
    ]

    refused = run(environment, "jobs", "show", "--id", job_id, "--content")
    metadata = run(environment, "mailboxes", "show", "--id", mailbox_id, "--json")
    metadata_text = run(environment, "mailboxes", "show", "--id", mailbox_id)

    assert refused.returncode == 1
    for answer in (refused, metadata, metadata_text):
        assert "granted no active support access" in answer.stderr
        assert "Invoice" not in answer.stdout and "billing@" not in answer.stdout
    assert (metadata.returncode, metadata_text.returncode) == (0, 0)
    shown = json.loads(metadata.stdout)
    assert shown["details"] is None
    assert (shown["id"], shown["state"], shown["provider"]) == (
        mailbox_id,
        "connected",
        "microsoft",
    )
    assert shown["capabilities"] == ["send"]
    assert shown["limits"] == {
        "max_concurrency": None,
        "rate_per_minute": None,
        "daily_recipient_cap": None,
    }
    assert shown["jobs_by_state"]["unknown"] == 1 and shown["jobs_by_state"]["queued"] == 0
    assert "address" not in shown and "granted_scopes" not in shown
    assert "state\tconnected" in metadata_text.stdout.splitlines()
    assert "jobs_by_state.unknown\t1" in metadata_text.stdout.splitlines()

    asyncio.run(_granted(url, job_id, 1))
    content = run(environment, "jobs", "show", "--id", job_id, "--content")
    details = run(environment, "mailboxes", "show", "--id", mailbox_id, "--json")
    details_text = run(environment, "mailboxes", "show", "--id", mailbox_id)

    assert content.returncode == 0, content.stderr
    assert json.loads(content.stdout)["content"] == {"subject": "Invoice"}
    assert details.returncode == 0, details.stderr
    assert "support access" not in details.stderr
    shown = json.loads(details.stdout)
    assert shown["details"]["address"] == "billing@contoso.example"
    assert shown["details"]["granted_scopes"] == ["Mail.Send"]
    assert shown["jobs_by_state"]["unknown"] == 1
    assert "details.address\tbilling@contoso.example" in details_text.stdout.splitlines()
    with contextlib.closing(sqlite3.connect(url.split("///", 1)[1])) as connection:
        accesses = connection.execute(
            "SELECT actor, target FROM audit_events WHERE action = 'support.access' ORDER BY id"
        ).fetchall()
    # Every look under the grant is audited; none was without it.
    assert accesses == [("cli", job_id), ("cli", mailbox_id), ("cli", mailbox_id)]


def test_accounts_and_mailboxes_list_answer_in_json_with_metadata_only(
    environment: dict[str, str],
) -> None:
    assert run(environment, "migrate", "--json").stdout.strip() == '{\n  "migrated": true\n}'
    job_id = asyncio.run(_unknown_job(environment["MAILBOX_WORKER_DATABASE__URL"]))
    created = json.loads(run(environment, "accounts", "create", "Fabrikam", "--json").stdout)

    accounts = run(environment, "accounts", "list", "--json")
    listed = json.loads(accounts.stdout)
    job = json.loads(run(environment, "jobs", "show", "--id", job_id, "--json").stdout)
    account_id = job["account_id"]
    mailboxes = run(environment, "mailboxes", "list", "--account", account_id, "--json")
    table = run(environment, "mailboxes", "list", "--account", account_id)
    empty = run(environment, "mailboxes", "list", "--account", created["id"], "--json")

    assert accounts.returncode == 0
    assert {(row["id"], row["name"]) for row in listed} == {
        (account_id, "acme"),
        (created["id"], "Fabrikam"),
    }
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["created_at"]) for row in listed
    )
    assert mailboxes.returncode == 0
    [mailbox] = json.loads(mailboxes.stdout)
    assert (mailbox["account_id"], mailbox["provider"], mailbox["state"]) == (
        account_id,
        "microsoft",
        "connected",
    )
    assert "billing@" not in mailboxes.stdout + table.stdout
    assert (
        table.stdout.splitlines()[0] == "ID\tACCOUNT_ID\tPROVIDER\tSTATE\tSTATE_REASON\tUPDATED_AT"
    )
    assert json.loads(empty.stdout) == []


def test_operator_commands_keep_their_exit_statuses(environment: dict[str, str]) -> None:
    assert run(environment, "migrate").returncode == 0
    account = json.loads(run(environment, "accounts", "create", "Contoso", "--json").stdout)["id"]
    key = json.loads(run(environment, "keys", "create", "--account", account, "--json").stdout)
    answers = {
        "mailboxes list without --account": (run(environment, "mailboxes", "list"), 2),
        "mailboxes show of no mailbox": (
            run(environment, "mailboxes", "show", "--id", "mbx_nope", "--json"),
            1,
        ),
        "mailboxes disconnect of no mailbox": (
            run(environment, "mailboxes", "disconnect", "--id", "mbx_nope"),
            1,
        ),
        "accounts create without a name": (run(environment, "accounts", "create"), 2),
        "keys create for no account": (
            run(environment, "keys", "create", "--account", "acc_nope"),
            1,
        ),
        "keys revoke of no key": (run(environment, "keys", "revoke", "--id", "nope"), 1),
    }
    revoked = run(environment, "keys", "revoke", "--id", key["id"], "--json")
    checked = run(environment, "config", "check", "--json")
    origins = run(
        environment,
        "accounts",
        "origins",
        "--account",
        account,
        "--add",
        "https://A.example",
        "--json",
    )

    for name, (answer, status) in answers.items():
        assert answer.returncode == status, name
        assert answer.stdout == "" and answer.stderr.startswith("mailbox-worker: "), name
        assert "Traceback" not in answer.stderr, name
    assert key["secret"].startswith(f"mwk_{key['id']}_") and key["account_id"] == account
    assert json.loads(revoked.stdout) == {"id": key["id"], "revoked": True}
    assert json.loads(checked.stdout) == {"valid": True}
    assert json.loads(origins.stdout) == {
        "account_id": account,
        "return_origins": ["https://a.example"],
    }
