"""The intake refuses at once a message the mailbox could never send, by what it was granted:
a send-only Microsoft mailbox has ``sendMail`` alone (one 4 MB request), a drafts-enabled one
may go through a draft and upload sessions up to 35 MB (docs/providers.md B2, B3, B6)."""

from __future__ import annotations

import base64

import pytest
from prometheus_client import CollectorRegistry

from mailbox_worker.accounts import Principal
from mailbox_worker.errors import PayloadTooLarge
from mailbox_worker.jobs.intake import JobIntake, Submission
from mailbox_worker.prometheus import PrometheusTelemetry
from mailbox_worker.providers.graph import GraphProvider

from .conftest import Stores

PDF = b"%PDF-1.4\n" + bytes(3_500_000) + b"\n%%EOF\n"  # 3.5 MB: over one request's 3 MB of MIME


def body(mailbox_id: str) -> dict[str, object]:
    return {
        "mailbox_id": mailbox_id,
        "mode": "send",
        "message": {
            "to": [{"address": "ap@fabrikam.example"}],
            "subject": "Invoice",
            "text": "Attached.",
            "attachments": [
                {
                    "filename": "invoice.pdf",
                    "content_type": "application/pdf",
                    "content_base64": base64.b64encode(PDF).decode(),
                }
            ],
        },
    }


async def test_a_send_only_microsoft_mailbox_refuses_what_needs_a_draft(stores: Stores) -> None:
    account = await stores.accounts.create_account("acme")
    principal = Principal(account.id, "key_1", frozenset({"jobs:write"}))
    send_only = await stores.connected_mailbox(account.id, capabilities=("send",))
    with_drafts = await stores.connected_mailbox(
        account.id, "accounts@contoso.example", capabilities=("send", "draft")
    )
    graph = GraphProvider()
    intake = JobIntake(
        stores.jobs,
        lambda provider, mode, capabilities: graph.max_message_bytes(
            "send" if mode == "send" else "draft", capabilities
        ),
        PrometheusTelemetry(CollectorRegistry()),
    )

    with pytest.raises(PayloadTooLarge) as refused:
        await intake.submit(principal, Submission(body(send_only.id), None))
    assert refused.value.code == "message_too_large"
    assert "draft capability may send larger ones" in refused.value.message
    job, created = await intake.submit(principal, Submission(body(with_drafts.id), None))
    assert (job.state, created) == ("queued", True)
