"""The OpenAPI document's ``webhooks`` describe exactly the events the code can emit."""

from __future__ import annotations

from typing import Any

import pytest

from mailbox_worker.api.document import ApiDocument
from mailbox_worker.events.outbox import outbox_row
from mailbox_worker.events.types import EventType
from mailbox_worker.jobs.transitions import ANNOUNCED_STATES, JOB_SETTLED

CONTENT = ApiDocument.packaged().content
WEBHOOKS: dict[str, Any] = CONTENT["webhooks"]
SCHEMAS: dict[str, Any] = CONTENT["components"]["schemas"]


def body_reference(event_type: str) -> str:
    content = WEBHOOKS[event_type]["post"]["requestBody"]["content"]["application/json"]
    reference: str = content["schema"]["$ref"]
    return reference


def body_schema(event_type: str) -> dict[str, Any]:
    name = body_reference(event_type).removeprefix("#/components/schemas/")
    assert name.startswith("Event"), name
    schema: dict[str, Any] = SCHEMAS[name]
    return schema


def test_every_event_type_has_a_webhook_and_nothing_else_does() -> None:
    assert set(WEBHOOKS) == {str(event_type) for event_type in EventType}
    assert set(SCHEMAS["WebhookEventType"]["enum"]) == set(WEBHOOKS)


def test_the_transitions_announce_only_registered_types() -> None:
    """What ``jobs.transitions.announce`` and the settlement emit is in the registry."""
    announced = {f"job.{state}" for state in ANNOUNCED_STATES} | {JOB_SETTLED}
    assert announced <= set(EventType)
    assert {t for t in EventType if t.startswith("job.")} == announced


@pytest.mark.parametrize("event_type", sorted(EventType))
def test_each_webhook_body_is_the_envelope_of_its_own_type(event_type: str) -> None:
    schema = body_schema(event_type)
    assert schema["properties"]["type"] == {"const": event_type}
    assert schema["properties"]["id"] == {"$ref": "#/components/schemas/WebhookEventId"}
    assert set(schema["required"]) == {"id", "type", "account_id", "created_at", "data"}
    assert schema["example"]["type"] == event_type
    envelope = SCHEMAS["WebhookEnvelope"]["oneOf"]
    assert {"$ref": body_reference(event_type)} in envelope
    parameters = CONTENT["components"]["parameters"]
    headers = {
        parameters[p["$ref"].rsplit("/", 1)[1]]["name"]
        for p in WEBHOOKS[event_type]["post"]["parameters"]
    }
    assert headers == {
        "X-Mailbox-Worker-Signature",
        "X-Mailbox-Worker-Event-Id",
        "X-Mailbox-Worker-Event-Type",
    }
    assert "2XX" in WEBHOOKS[event_type]["post"]["responses"]


def test_an_event_of_an_unregistered_type_cannot_be_written() -> None:
    with pytest.raises(ValueError, match=r"job\.succeeded"):
        outbox_row("acc_1", "job.succeeded", {"job_id": "job_1"})


def test_an_event_gets_a_fresh_prefixed_id() -> None:
    first = outbox_row("acc_1", "job.sent", {"job_id": "job_1"})
    second = outbox_row("acc_1", "job.sent", {"job_id": "job_1"})
    assert first.public_id.startswith("evt_") and second.public_id.startswith("evt_")
    assert first.public_id != second.public_id
