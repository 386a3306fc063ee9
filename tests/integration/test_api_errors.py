"""How the API fails: authentication, permissions, malformed bodies, unknown routes, crashes.

Every failure is JSON ``{"error": {"code", "message"}}`` with a stable code and a 4xx
(or a generic 500), and no answer nor log line carries an API key or a request's content.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from mailbox_worker.accounts import Principal
from mailbox_worker.api.document import read_document
from mailbox_worker.api.services import MailboxView
from mailbox_worker.db.accounts import PERMISSIONS
from tests.integration.api_harness import (
    MAX_REQUEST_BYTES,
    RecordingConnector,
    RunningApi,
    job_request,
    running_api,
)

DOCUMENT = json.loads(read_document())
# Every operation that needs an API key, with the permission it needs.
PROTECTED = [
    ("POST", "/v1/jobs", "jobs:write"),
    ("POST", "/v1/job-batches", "jobs:write"),
    ("GET", "/v1/jobs", "jobs:read"),
    ("GET", "/v1/jobs/job_1", "jobs:read"),
    ("POST", "/v1/jobs/job_1/cancel", "jobs:write"),
    ("POST", "/v1/jobs/job_1/resolve", "jobs:write"),
    ("POST", "/v1/jobs/job_1/retry", "jobs:write"),
    ("POST", "/v1/mailboxes", "mailboxes:write"),
    ("GET", "/v1/mailboxes", "mailboxes:read"),
    ("GET", "/v1/mailboxes/mbx_1", "mailboxes:read"),
    ("POST", "/v1/mailboxes/mbx_1/connect", "mailboxes:write"),
    ("DELETE", "/v1/mailboxes/mbx_1", "mailboxes:write"),
    ("PATCH", "/v1/mailboxes/mbx_1", "account:write"),
    ("GET", "/v1/account", "account:read"),
    ("PUT", "/v1/account/return-origins", "account:write"),
    ("GET", "/v1/account/export", "account:write"),
    ("POST", "/v1/account/pause", "account:write"),
    ("POST", "/v1/account/resume", "account:write"),
    ("POST", "/v1/account/erase", "account:write"),
    ("GET", "/v1/account/support-access", "account:read"),
    ("POST", "/v1/account/support-access", "account:write"),
    ("DELETE", "/v1/account/support-access", "account:write"),
]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[RunningApi]:
    async with running_api(tmp_path) as running:
        yield running


def test_the_protected_list_covers_every_operation_that_needs_a_key() -> None:
    secured = {
        (method.upper(), path)
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
        if operation.get("security", DOCUMENT["security"])
    }
    listed = {
        (method, path.replace("job_1", "{job_id}").replace("mbx_1", "{mailbox_id}"))
        for method, path, _ in PROTECTED
    }
    assert listed == secured


# -- authentication and permissions -------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "permission"), PROTECTED)
async def test_without_an_api_key_every_operation_is_unauthenticated(
    api: RunningApi, method: str, path: str, permission: str
) -> None:
    answer = await api.call(method, path)
    assert (answer.status, answer.error_code) == (401, "unauthenticated")
    assert answer.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("authorization", "secret"),
    [
        ("Bearer mwk_0123456789abcdef_not-the-secret", "not-the-secret"),
        ("Bearer not-even-a-key", "not-even-a-key"),
        ("Bearer ", None),
        ("Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("mwk_0123456789abcdef_no-scheme", "no-scheme"),
    ],
    ids=["unknown", "malformed", "empty", "basic", "no scheme"],
)
async def test_a_wrong_api_key_is_unauthenticated_and_never_echoed(
    api: RunningApi, authorization: str, secret: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = await api.call("GET", "/v1/mailboxes", headers={"Authorization": authorization})
    assert (answer.status, answer.error_code) == (401, "unauthenticated")
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    if secret is not None:
        assert secret.encode() not in answer.body
        assert secret not in caplog.text


async def test_a_revoked_api_key_is_unauthenticated(api: RunningApi) -> None:
    _, key = await api.account_with_key()
    assert (await api.call("GET", "/v1/mailboxes", key=key)).status == 200
    key_id = key.removeprefix("mwk_").partition("_")[0]
    assert await api.accounts.revoke_api_key(key_id)

    answer = await api.call("GET", "/v1/mailboxes", key=key)

    assert (answer.status, answer.error_code) == (401, "unauthenticated")


@pytest.mark.parametrize(("method", "path", "permission"), PROTECTED)
async def test_a_key_without_the_permission_is_forbidden_naming_it(
    api: RunningApi, method: str, path: str, permission: str
) -> None:
    _, key = await api.account_with_key(PERMISSIONS - {permission})
    answer = await api.call(method, path, key=key, json_body={})
    assert (answer.status, answer.error_code) == (403, "forbidden")
    assert permission in answer.json()["error"]["message"]


async def test_permission_is_checked_before_the_body_is_read(api: RunningApi) -> None:
    _, key = await api.account_with_key(frozenset({"jobs:read"}))
    answer = await api.call(
        "POST", "/v1/jobs", key=key, data=b"{not json", headers={"Content-Type": "text/plain"}
    )
    assert (answer.status, answer.error_code) == (403, "forbidden")


# -- bodies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b'{"mailbox_id": "mbx_1",}',
        b"\xff\xfe{}",
        b'{"mailbox_id": NaN}',
        b'{"mailbox_id": "\\ud800"}',
        b"[" * 100_000,
    ],
    ids=["empty", "truncated", "trailing comma", "not utf-8", "NaN", "lone surrogate", "deep"],
)
async def test_a_body_that_is_not_json_is_invalid_json(api: RunningApi, raw: bytes) -> None:
    _, key = await api.account_with_key()
    answer = await api.call(
        "POST", "/v1/jobs", key=key, data=raw, headers={"Content-Type": "application/json"}
    )
    assert (answer.status, answer.error_code) == (400, "invalid_json"), answer.body


@pytest.mark.parametrize(("depth", "code"), [(400, "invalid_request"), (900, "invalid_json")])
async def test_a_body_too_deep_to_explain_is_invalid_json(
    api: RunningApi, depth: int, code: str
) -> None:
    """JSON the parser takes (under its 1,000 levels) but nested too deep to name its
    failures: two equal arrays 400 deep where the items must be unique made jsonschema raise
    RecursionError, answered 500. They are explained now (``api/schema_keywords.py`` compares
    them in two frames a level); 900 deep, they are not, and that is ``invalid_json``."""
    _, key = await api.account_with_key()
    deep = "[" * depth + "]" * depth
    raw = f'{{"provider": "microsoft", "capabilities": [{deep}, {deep}]}}'.encode()
    answer = await api.call(
        "POST", "/v1/mailboxes", key=key, data=raw, headers={"Content-Type": "application/json"}
    )
    assert (answer.status, answer.error_code) == (400, code), answer.body
    if code == "invalid_json":
        assert "nested too deeply" in answer.json()["error"]["message"]
    else:
        assert "capabilities must not repeat an item" in answer.json()["error"]["message"]


async def test_a_leading_byte_order_mark_is_ignored(api: RunningApi) -> None:
    """RFC 8259 8.1: a parser may ignore a BOM; some .NET clients send one."""
    _, key = await api.account_with_key()
    answer = await api.call(
        "POST",
        "/v1/jobs",
        key=key,
        data=b"\xef\xbb\xbf" + b'{"mailbox_id": "mbx_unknown"}',
        headers={"Content-Type": "application/json"},
    )
    assert (answer.status, answer.error_code) == (400, "invalid_request"), answer.body


async def test_json_that_is_not_an_object_names_the_body(api: RunningApi) -> None:
    _, key = await api.account_with_key()
    answer = await api.call("POST", "/v1/jobs", key=key, json_body=["mbx_1"])
    assert (answer.status, answer.error_code) == (400, "invalid_request")
    assert answer.json()["error"]["details"] == [
        {"field": "(body)", "code": "invalid_request", "message": "must be an object"}
    ]


async def test_invalid_json_does_not_echo_the_body(api: RunningApi) -> None:
    _, key = await api.account_with_key()
    raw = b'{"message": {"subject": "Salary review: confidential", }'
    answer = await api.call(
        "POST", "/v1/jobs", key=key, data=raw, headers={"Content-Type": "application/json"}
    )
    assert answer.error_code == "invalid_json"
    assert b"confidential" not in answer.body


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
async def test_a_body_of_another_media_type_is_unsupported(
    api: RunningApi, content_type: str
) -> None:
    _, key = await api.account_with_key()
    answer = await api.call(
        "POST", "/v1/jobs", key=key, data=b"{}", headers={"Content-Type": content_type}
    )
    assert (answer.status, answer.error_code) == (415, "unsupported_media_type")


async def test_a_body_over_the_limit_is_too_large(api: RunningApi) -> None:
    account_id, key = await api.account_with_key()
    mailbox = await api.connected_mailbox(account_id)
    body = json.dumps(job_request(mailbox.id, text="x" * MAX_REQUEST_BYTES)).encode()

    answer = await api.call(
        "POST",
        "/v1/jobs",
        key=key,
        data=io.BytesIO(body),
        headers={"Content-Type": "application/json"},
    )

    assert (answer.status, answer.error_code) == (413, "payload_too_large")
    assert str(MAX_REQUEST_BYTES) in answer.json()["error"]["message"]
    assert sum((await api.queue.count_by_state()).values()) == 0


async def test_a_body_sent_in_many_chunks_is_read_whole(api: RunningApi) -> None:
    """The body is read chunk by chunk (``parsing.read_body``): one sent in pieces, with
    pauses between them so that each arrives on its own, is the same request as one sent at
    once, and the job it makes says so."""
    account_id, key = await api.account_with_key()
    mailbox = await api.connected_mailbox(account_id)
    body = json.dumps(job_request(mailbox.id, text="y" * 200_000)).encode()
    pieces = [body[at : at + 50_000] for at in range(0, len(body), 50_000)]
    host, port = api.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"POST /v1/jobs HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {key}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        for piece in pieces:
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        length = next(
            int(line.split(":", 1)[1])
            for line in head.split("\r\n")
            if line.lower().startswith("content-length:")
        )
        answer = json.loads(await reader.readexactly(length))
    finally:
        writer.close()
    assert len(pieces) > 4
    assert head.startswith("HTTP/1.1 202"), answer
    stored = await api.jobs.payload(answer["id"])
    assert stored is not None and "y" * 200_000 in json.dumps(stored)


# -- routes ---------------------------------------------------------------------------------


async def test_an_unknown_route_is_not_found_in_json(api: RunningApi) -> None:
    answer = await api.call("GET", "/v2/jobs")
    assert (answer.status, answer.error_code) == (404, "not_found")
    assert answer.headers["Content-Type"].startswith("application/json")


async def test_a_wrong_method_is_not_allowed_and_says_what_is(api: RunningApi) -> None:
    answer = await api.call("PUT", "/v1/mailboxes")
    assert (answer.status, answer.error_code) == (405, "method_not_allowed")
    assert set(answer.headers["Allow"].split(",")) == {"GET", "POST"}


# -- crashes ----------------------------------------------------------------------------------


class CrashingConnector(RecordingConnector):
    password = "hunter" + "2"  # so that the source line a traceback shows does not hold it

    async def list(self, principal: Principal, **page: Any) -> list[MailboxView]:
        raise RuntimeError(f"connection to db failed: password={self.password}")


async def test_an_unexpected_error_is_a_generic_500_logged_without_its_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_api(tmp_path, connector=lambda _: CrashingConnector()) as api:
        _, key = await api.account_with_key()

        answer = await api.call("GET", "/v1/mailboxes", key=key)

        failures = api.registry.get_sample_value(
            "mailbox_worker_http_requests_total",
            {"method": "GET", "route": "/v1/mailboxes", "status": "500"},
        )
    assert (answer.status, answer.error_code) == (500, "internal_error")
    assert b"hunter2" not in answer.body and b"RuntimeError" not in answer.body
    assert "RuntimeError" in caplog.text and "in list" in caplog.text  # the traceback is logged
    assert "hunter2" not in caplog.text
    assert key not in caplog.text
    assert failures == 1


# -- operations endpoints and metrics ---------------------------------------------------------


async def test_health_and_readiness(api: RunningApi) -> None:
    health = await api.call("GET", "/healthz")
    ready = await api.call("GET", "/readyz")
    assert (health.status, health.json()) == (200, {"status": "ok"})
    assert (ready.status, ready.json()) == (
        200,
        {"status": "ready", "checks": {"database": True, "migrations": True}},
    )


async def _not_migrated() -> Mapping[str, bool]:
    return {"database": True, "migrations": False}


async def _broken() -> Mapping[str, bool]:
    raise ConnectionError("the database is gone")


@pytest.mark.parametrize(
    ("ready", "checks"),
    [(_not_migrated, {"database": True, "migrations": False}), (_broken, {})],
    ids=["a check fails", "the checks raise"],
)
async def test_not_ready_is_503_naming_the_checks(
    tmp_path: Path, ready: Any, checks: dict[str, bool]
) -> None:
    async with running_api(tmp_path, ready=ready) as api:
        answer = await api.call("GET", "/readyz")
        health = await api.call("GET", "/healthz")
    assert (answer.status, answer.json()) == (503, {"status": "not_ready", "checks": checks})
    assert health.status == 200


async def test_the_document_is_served_as_shipped(api: RunningApi) -> None:
    answer = await api.call("GET", "/openapi.json")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.body == read_document()


async def test_requests_are_counted_by_route_template_never_by_path(api: RunningApi) -> None:
    _, key = await api.account_with_key()
    await api.call("GET", "/v1/jobs/job_secret_1", key=key)
    await api.call("GET", "/v1/jobs/job_secret_2", key=key)
    await api.call("GET", "/no/such/route/mwk_leak")
    await api.call("PROPFIND", "/v1/jobs")

    metrics = await api.call("GET", "/metrics")

    def count(method: str, route: str, status: str) -> float | None:
        labels = {"method": method, "route": route, "status": status}
        return api.registry.get_sample_value("mailbox_worker_http_requests_total", labels)

    assert count("GET", "/v1/jobs/{job_id}", "404") == 2
    assert count("GET", "unmatched", "404") == 1
    assert count("other", "unmatched", "405") == 1
    assert metrics.status == 200
    assert metrics.headers["Content-Type"].startswith("text/plain")
    text = metrics.body.decode()
    assert "mailbox_worker_http_requests_total" in text
    assert "job_secret" not in text and "mwk_leak" not in text


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
async def test_operations_endpoints_answer_head_for_uptime_checkers(
    api: RunningApi, path: str
) -> None:
    answer = await api.call("HEAD", path)
    assert answer.status == 200
    assert answer.body == b""


async def test_the_oauth_callback_refuses_head_which_would_consume_the_state(
    api: RunningApi,
) -> None:
    answer = await api.call("HEAD", "/oauth/callback?state=x&code=y")
    assert answer.status == 405
