"""The shipped OpenAPI document: valid OpenAPI 3.1, in step with the router and the code."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any, cast

import pytest
import schemathesis
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from schemathesis.core.result import Ok

from mailbox_worker.api import admin_page, request_id
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


RESPONSE_COMPONENTS = {
    "400": "BadRequest",
    "401": "Unauthorized",
    "403": "Forbidden",
    "404": "NotFound",
    "405": "MethodNotAllowed",
    "409": "Conflict",
    "413": "PayloadTooLarge",
    "429": "TooManyRequests",
    "500": "ServerError",
    "503": "ServiceUnavailable",
}


def test_every_operation_declares_405_and_server_errors() -> None:
    for method, path, operation in operations():
        responses = operation["responses"]
        assert responses["405"] == {"$ref": "#/components/responses/MethodNotAllowed"}, path
        assert responses["500"] == {"$ref": "#/components/responses/ServerError"}, path
        assert "503" in responses, (method, path)
        if path.startswith("/v1/"):
            assert responses["429"] == {"$ref": "#/components/responses/TooManyRequests"}, path


def test_the_reusable_answers_are_named_by_their_status() -> None:
    responses = CONTENT["components"]["responses"]
    assert set(RESPONSE_COMPONENTS.values()) <= set(responses)
    for method, path, operation in operations():
        for status, response in operation["responses"].items():
            name = RESPONSE_COMPONENTS.get(status)
            reference = response.get("$ref", "")
            if name is not None and reference.startswith("#/components/responses/"):
                # the admin forms answer their page instead of JSON
                assert reference.endswith((f"/{name}", "/AdminPage", "/AdminNotFound")), (
                    method,
                    path,
                    status,
                )
    for name in ("TooManyRequests", "ServiceUnavailable"):
        assert "Retry-After" in responses[name]["headers"]
    assert "Allow" in responses["MethodNotAllowed"]["headers"]


def test_every_answer_declares_the_request_id_header() -> None:
    for method, path, operation in operations():
        for status, response in operation["responses"].items():
            headers = resolve(response).get("headers", {})
            assert headers.get("X-Request-Id") == {"$ref": "#/components/headers/RequestId"}, (
                method,
                path,
                status,
            )


def test_the_request_id_pattern_is_the_one_the_server_keeps() -> None:
    pattern = CONTENT["components"]["headers"]["RequestId"]["schema"]["pattern"]
    assert pattern == f"^{request_id.WELL_FORMED.pattern}$"


def referenced_schemas(node: Any) -> set[str]:
    """The component schemas ``node`` uses, directly or through other schemas."""
    found: set[str] = set()
    pending = [node]
    while pending:
        for inner in walk(pending.pop()):
            if isinstance(inner, dict) and "$ref" in inner:
                name = inner["$ref"].removeprefix("#/components/schemas/")
                if name in SCHEMAS and name not in found:
                    found.add(name)
                    pending.append(SCHEMAS[name])
    return found


def request_schemas() -> set[str]:
    return referenced_schemas(
        [operation.get("requestBody", {}) for _, _, operation in operations()]
    )


def response_schemas() -> set[str]:
    return referenced_schemas(
        [
            [resolve(response) for response in operation["responses"].values()]
            for _, _, operation in operations()
        ]
    )


def test_every_request_schema_refuses_unknown_properties() -> None:
    assert {"JobRequest", "Message", "MailboxChange"} <= request_schemas()
    for name in request_schemas():
        for node in walk(SCHEMAS[name]):
            if isinstance(node, dict) and "properties" in node:
                assert node.get("additionalProperties") is False, (name, sorted(node["properties"]))


def test_response_schemas_allow_new_properties() -> None:
    answers = response_schemas()
    assert {"Job", "JobWithEvents", "Mailbox", "Error"} <= answers
    shared = {name for name in answers & request_schemas() if "properties" in SCHEMAS[name]}
    assert shared == set()  # an object schema used both ways is split in two
    for name in answers:
        for node in walk(SCHEMAS[name]):
            if isinstance(node, dict):
                assert node.get("additionalProperties") is not False, name


def test_a_job_with_events_is_a_job_whose_events_are_required() -> None:
    job, events = SCHEMAS["JobWithEvents"]["allOf"]
    assert job == {"$ref": "#/components/schemas/Job"}
    assert events["required"] == ["events"] and "events" in events["properties"]
    assert "events" not in SCHEMAS["Job"]["properties"]  # a plain job never names them


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
        last_error_code="invalid_recipients",
        last_error_message="the provider refused a recipient",
        provider_message_id=None,
        provider_draft_id=None,
        web_link=None,
    )
    event = JobEvent(
        public_id="jev_" + "0" * 32,
        job_id="job_1",
        at=NOW,
        kind="attempt",
        from_state="running",
        to_state="failed",
        code="invalid_recipients",
        detail="free text that stays internal",
        provider_status=400,
        worker="host-1",
    )

    represented = job_json(JobView.of(job, [event]))

    DOCUMENT.validate(schema_pointer("JobWithEvents"), represented)
    DOCUMENT.validate(schema_pointer("Job"), job_json(JobView.of(job)))
    assert represented["created_at"] == "2024-05-01T12:00:00.000Z"
    assert represented["last_error"] == {
        "code": "invalid_recipients",
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
        ("a@[x", False),  # the standard library's parser fails on it (AttributeError)
        ("a@[192.0.2.1]", True),
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


def test_the_document_passes_openapi_spec_validator() -> None:
    # A second, independent validator (the one code generators' users run), besides
    # schemathesis' meta-schema above.
    validate(CONTENT, cls=OpenAPIV31SpecValidator)
