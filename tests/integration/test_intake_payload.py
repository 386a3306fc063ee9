"""What the intake stores is the message's JSON exactly, whoever submits it: a submission the
API did not validate (``Submission.base64_checked`` False) has its attachments' contents read
for characters JSON must escape, so that a content with a quote or a backslash can neither
break the stored payload nor add to it (``jobs/message_json.py``)."""

from __future__ import annotations

import hashlib
import json

from prometheus_client import CollectorRegistry
from sqlalchemy import text

from mailbox_worker.accounts import Principal
from mailbox_worker.jobs.intake import JobIntake, Submission
from mailbox_worker.prometheus import PrometheusTelemetry

from .conftest import Stores

# Four characters, as padded base64 would be, but a quote and a backslash among them; and one
# that would close the string and add a recipient if it were pasted into the JSON as it is.
_ADDED = 'QUJD"}],"bcc":[{"address":"evil@fabrikam.example"}],"z":[{"q":"'
CONTENTS = ['QU"\\', _ADDED + "A" * (-len(_ADDED) % 4)]


async def test_an_unchecked_submissions_contents_are_stored_as_json_writes_them(
    stores: Stores,
) -> None:
    account = await stores.accounts.create_account("acme")
    principal = Principal(account.id, "key_1", frozenset({"jobs:write"}))
    mailbox = await stores.connected_mailbox(account.id)
    intake = JobIntake(
        stores.jobs,
        lambda provider, mode, capabilities: 4_000_000,
        PrometheusTelemetry(CollectorRegistry()),
    )
    for number, content in enumerate(CONTENTS):
        message = {
            "to": [{"address": "ap@fabrikam.example"}],
            "subject": "Invoice",
            "text": "Attached.",
            "attachments": [
                {"filename": "i.pdf", "content_type": "application/pdf", "content_base64": content}
            ],
        }
        body = {"mailbox_id": mailbox.id, "mode": "send", "message": message}
        key = f"key-{number}"
        job, created = await intake.submit(principal, Submission(body, key))
        assert created
        assert await stores.jobs.payload(job.id) == message  # no "bcc" added
        # The request's digest is its canonical JSON's (jobs/intake.py), escapes included.
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        async with stores.engine.connect() as connection:
            stored = await connection.scalar(
                text("SELECT request_sha256 FROM jobs WHERE id = :id"), {"id": job.id}
            )
        assert stored == hashlib.sha256(canonical.encode()).hexdigest()
        # The same request again is a replay: its digest is the canonical one both times.
        again, created_again = await intake.submit(principal, Submission(body, key))
        assert (again.id, created_again) == (job.id, False)
