"""What a large job in flight keeps and allocates (docs/performance.md#memory): the Graph split
of a message too large for one request, and the claim's payload once the MIME is built.

Memory is counted by ``tracemalloc`` (Python's own allocations, the same on every run for the
same inputs), never by the clock or the process's RSS.
"""

from __future__ import annotations

import base64
import random
import tracemalloc
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from mailbox_worker.db.models import Job, Mailbox
from mailbox_worker.jobs.claims import ClaimedJob, Lease
from mailbox_worker.jobs.mime import build_message
from mailbox_worker.providers.graph_mime import base64_length, detach_attachments

LIMIT = 4 * 1024 * 1024
PDF_SIZE = 6 * 1024 * 1024


def _payload(pdf: bytes, small: bytes) -> dict[str, Any]:
    return {
        "to": [{"address": "ap@fabrikam.example"}],
        "subject": "Invoice INV-000001",
        "text": "Please find the invoice attached.",
        "attachments": [
            {
                "filename": "INV-000001.pdf",
                "content_type": "application/pdf",
                "content_base64": base64.b64encode(pdf).decode(),
            },
            {
                "filename": "terms.txt",
                "content_type": "text/plain",
                "content_base64": base64.b64encode(small).decode(),
            },
        ],
    }


def _large_message() -> tuple[bytes, bytes, bytes]:
    generator = random.Random(9)  # incompressible, and the same on every run
    pdf = b"%PDF-1.4\n" + generator.randbytes(PDF_SIZE)
    small = b"Payment within 30 days.\n" * 10
    mime = build_message(
        _payload(pdf, small), message_id="<m1@contoso.example>", sender="bench@contoso.example"
    )
    return mime, pdf, small


def test_base64_length_is_the_encoded_length() -> None:
    for size in (0, 1, 2, 3, 4, 5, 1000, 1001, 1002):
        assert base64_length(size) == len(base64.b64encode(b"x" * size))


def test_the_split_detaches_the_largest_attachment_as_the_parser_reads_it() -> None:
    mime, pdf, _ = _large_message()
    remainder, detached = detach_attachments(mime, LIMIT)
    assert [(each.name, each.content_type, each.data) for each in detached] == [
        ("INV-000001.pdf", "application/pdf", pdf)
    ]
    rest = BytesParser(policy=policy.SMTP).parsebytes(remainder)
    assert isinstance(rest, EmailMessage)
    assert [part.get_filename() for part in rest.iter_attachments()] == ["terms.txt"]
    assert base64_length(len(remainder)) <= LIMIT


def test_the_split_allocates_about_twice_the_message_at_most() -> None:
    """Before: the whole message decoded to a str and wrapped in a StringIO (4 bytes a
    character), attachments decoded through encode/splitlines/join: a peak of about 7 x the
    message. Now about 2 x (the parsed part's text and the decoded attachment)."""
    mime, _, _ = _large_message()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        remainder, detached = detach_attachments(mime, LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert detached
    assert remainder
    assert peak - before < 3 * len(mime)


def test_a_claimed_payload_is_handed_over_once() -> None:
    """The worker takes the payload to build the MIME; the claim then no longer holds it, so
    a job waiting on its provider call keeps the MIME but not the base64 it came from."""
    payload = {"to": [{"address": "ap@fabrikam.example"}], "subject": "s", "text": "t"}
    lease = Lease("job_1", "worker", "worker/1")
    claimed = ClaimedJob(Job(id="job_1"), payload, lease, Mailbox(id="mbx_1"))
    assert claimed.take_payload() is payload
    assert claimed.payload == {}
    assert claimed.take_payload() == {}
