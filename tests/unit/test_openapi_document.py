"""The shipped OpenAPI document: valid OpenAPI 3.1, in step with the router and the code."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any, cast

import pytest
import schemathesis
from jsonschema import Draft202012Validator
from schemathesis.core.result import Ok

from mailbox_worker.api import admin_page
from mailbox_worker.api.admin_session import AdminSessions
from mailbox_worker.api.app import create_app
from mailbox_worker.api.document import (
    ApiDocument,
    is_date_time,
    is_uri,
    schema_pointer,
)
from mailbox_worker.api.representations import job_json, mailbox_json
from mailbox_worker.api.services import (
    AccountOperations,
    AccountRightsOperations,
    ApiServices,
    JobOperations,
    JobView,
    MailboxConnector,
    MailboxView,
)
from mailbox_worker.db.models import Job, JobEvent, Mailbox
from mailbox_worker.errors import ValidationFailed
from mailbox_worker.mailboxes.service import OUTCOMES
from mailbox_worker.policy.addresses import is_email_address
from mailbox_worker.policy.scopes import CAPABILITIES, PROVIDERS
from mailbox_worker.states import JobState, MailboxState
from mailbox_worker.telemetry import Telemetry

METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
DOCUMENT = ApiDocument.packaged()
CONTENT = DOCUMENT.content
SCHEMAS: dict[str, Any] = CONTENT["components"]["schemas"]


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in CONTENT["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method.upper(), path, operation


def resolve(node: Any) -> Any:
    """``node`` with a top-level ``$ref`` followed (the document's own pointers only)."""
    while isinstance(node, dict) and "$ref" in node and len(node) == 1:
        target: Any = CONTENT
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


# -- a valid OpenAPI 3.1 document -----------------------------------------------------------


def test_the_document_is_valid_openapi_3_1() -> None:
    assert CONTENT["openapi"].startswith("3.1.")
    schema = schemathesis.openapi.from_dict(CONTENT)
    schema.validate()  # the OpenAPI 3.1 meta-schema schemathesis ships
    loaded = list(schema.get_all_operations())
    assert len(loaded) == len(list(operations()))
    assert all(isinstance(result, Ok) for result in loaded)  # every operation resolves


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_each_component_schema_is_valid_json_schema_2020_12(name: str) -> None:
    Draft202012Validator.check_schema(SCHEMAS[name])


def test_every_reference_resolves() -> None:
    references = [
        node["$ref"] for node in walk(CONTENT) if isinstance(node, dict) and "$ref" in node
    ]
    assert references
    for reference in references:
        assert reference.startswith("#/"), reference
        assert resolve({"$ref": reference}) is not None


def test_operation_ids_are_unique() -> None:
    ids = [operation["operationId"] for _, _, operation in operations()]
    assert len(ids) == len(set(ids))


# -- in step with the router ------------------------------------------------------------------


def test_the_document_and_the_router_list_the_same_operations() -> None:
    services = ApiServices(
        accounts=cast(AccountOperations, None),
        jobs=cast(JobOperations, None),
        mailboxes=cast(MailboxConnector, None),
        rights=cast(AccountRightsOperations, None),
        admin_sessions=AdminSessions(cast(AccountOperations, None)),
        telemetry=cast(Telemetry, None),
        metrics_page=cast(Any, None),
        ready=cast(Any, None),
    )
    app = create_app(services)
    routed = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {(method, path) for method, path, _ in operations()}
    assert routed == documented


# -- answers documented the way the API gives them ------------------------------------------


def test_every_client_error_is_documented_with_the_error_schema() -> None:
    for method, path, operation in operations():
        for status, response in operation["responses"].items():
            if not status.isdigit() or not 400 <= int(status) < 500:
                continue
            content = resolve(response).get("content", {})
            if "application/json" in content:
                schema = content["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)


def test_each_operation_documents_the_failures_it_can_answer() -> None:
    for method, path, operation in operations():
        statuses = set(operation["responses"])
        if operation.get("security", CONTENT["security"]):
            assert {"401", "403"} <= statuses, (method, path)
        if "requestBody" in operation:
            assert {"400", "408", "413", "415"} <= statuses, (method, path)
        if "{" in path:
            assert "404" in statuses, (method, path)
        unauthenticated = resolve(operation["responses"].get("401", {}))
        if unauthenticated:
            assert "WWW-Authenticate" in unauthenticated["headers"]


# Answers only: a client must accept fields added later, so these leave them open.
OPEN_RESPONSE_SCHEMAS = frozenset({"JobList"})


def test_every_object_schema_refuses_unknown_properties() -> None:
    closed = {name: schema for name, schema in SCHEMAS.items() if name not in OPEN_RESPONSE_SCHEMAS}
    for node in walk(closed):
        if isinstance(node, dict) and "properties" in node:
            assert node.get("additionalProperties") is False, sorted(node["properties"])


@pytest.mark.parametrize(
    ("schema", "values"),
    [
        ("JobState", set(JobState)),
        ("MailboxState", set(MailboxState)),
        ("Provider", set(PROVIDERS)),
        ("Capability", set(CAPABILITIES)),
    ],
)
def test_enumerations_match_the_code(schema: str, values: set[str]) -> None:
    assert set(SCHEMAS[schema]["enum"]) == values


@pytest.mark.parametrize("name", [n for n in sorted(SCHEMAS) if "example" in SCHEMAS[n]])
def test_examples_are_valid(name: str) -> None:
    DOCUMENT.validate(schema_pointer(name), SCHEMAS[name]["example"])


def test_every_consent_outcome_is_documented_and_explained_on_the_admin_page() -> None:
    [outcome] = [
        parameter
        for parameter in CONTENT["paths"]["/admin"]["get"]["parameters"]
        if parameter["name"] == "outcome"
    ]
    documented = set(re.findall(r"`([a-z_]+)`", outcome["description"]))
    assert documented == set(OUTCOMES)
    assert set(admin_page.OUTCOMES) == set(OUTCOMES)


# -- representations match the response schemas -----------------------------------------------

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def test_a_job_is_represented_as_the_document_says() -> None:
    job = Job(
        id="job_1",
        account_id="acc_1",
        mailbox_id="mbx_1",
        mode="send",
        state="failed",
        reference=None,
        message_id="<job_1@contoso.example>",
        attempts=3,
        created_at=NOW,
        updated_at=NOW,
        finished_at=NOW,
        deadline=None,
        priority=0,
        last_error_code="recipient_rejected",
        last_error_message="the provider refused a recipient",
        provider_message_id=None,
        provider_draft_id=None,
        web_link=None,
    )
    event = JobEvent(
        job_id="job_1",
        at=NOW,
        kind="attempt",
        from_state="running",
        to_state="failed",
        code="recipient_rejected",
        detail="free text that stays internal",
        provider_status=400,
        worker="host-1",
    )

    represented = job_json(JobView.of(job, [event]))

    DOCUMENT.validate(schema_pointer("JobWithEvents"), represented)
    DOCUMENT.validate(schema_pointer("Job"), job_json(JobView.of(job)))
    assert represented["created_at"] == "2024-05-01T12:00:00.000Z"
    assert represented["last_error"] == {
        "code": "recipient_rejected",
        "message": "the provider refused a recipient",
    }
    assert "detail" not in represented["events"][0] and "worker" not in represented["events"][0]


def test_a_mailbox_is_represented_as_the_document_says() -> None:
    mailbox = Mailbox(
        id="mbx_1",
        account_id="acc_1",
        provider="microsoft",
        capabilities=["draft", "send"],
        address="billing@contoso.example",
        state=MailboxState.CONNECTED,
        state_reason=None,
        granted_scopes=["Mail.Send"],
        created_at=NOW,
        updated_at=NOW,
    )
    represented = mailbox_json(MailboxView.of(mailbox))
    DOCUMENT.validate(schema_pointer("Mailbox"), represented)
    assert "account_id" not in represented


# -- the formats the document asserts ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("billing@contoso.example", True),
        ("first.last+tag@sub.contoso.example", True),
        ("admin@localhost", True),
        ("not-an-address", False),
        ("a@b@contoso.example", False),
        ("a@contoso.example\r\nBcc: x@evil.example", False),
        ("Ann <ann@contoso.example>", False),
        ("a@contoso..example", False),
        ("a @contoso.example", False),
        ("a@contoso example", False),
        ("a(comment)@contoso.example", False),
        ("@contoso.example", False),
        ("a@", False),
        ("", False),
    ],
)
def test_email_addresses(value: str, valid: bool) -> None:
    assert is_email_address(value) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("2024-05-01T12:00:00Z", True),
        ("2024-05-01T12:00:00.123456+02:00", True),
        ("2024-05-01T12:00:00", False),
        ("2024-05-01", False),
        ("2024-13-01T12:00:00Z", False),
        ("2024-05-01T12:00:00Z\n", False),
    ],
)
def test_date_times(value: str, valid: bool) -> None:
    assert is_date_time(value) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("https://invoicing.example/back?x=1#y", True),
        ("http://127.0.0.1:8080/", True),
        ("https://", False),
        ("https://exa mple.example/", False),
        ("https://\u00e9.example/", False),
        ("https://a.example/%zz", False),
        ("https://a.example:99999/", False),
        ("//a.example/", False),
    ],
)
def test_uris(value: str, valid: bool) -> None:
    assert is_uri(value) is valid


def test_a_failure_names_fields_and_never_values() -> None:
    with pytest.raises(ValidationFailed) as raised:
        DOCUMENT.validate(
            schema_pointer("MailboxRequest"),
            {"provider": "secret-provider", "capabilities": ["send"], "secret-field": 1},
        )
    failure = raised.value
    assert failure.code == "invalid_request"
    assert {detail["field"] for detail in failure.details} == {"provider", "secret-field"}
    assert "secret-provider" not in str(failure.details) + failure.message
