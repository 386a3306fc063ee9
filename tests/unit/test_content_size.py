"""What the intake tells the store a request weighs (``JobStore.enqueue_for_mailboxes``'s
``size``, which bounds what one write of requests arriving together carries): the bodies
count, not only the attachments."""

from __future__ import annotations

from mailbox_worker.jobs.intake import Submission, _content_size


def submission(message: object) -> Submission:
    return Submission(
        body={"mailbox_id": "mbx", "mode": "send", "message": message}, idempotency_key=None
    )


def test_bodies_and_attachments_count() -> None:
    message = {
        "subject": "Invoice",
        "text": "t" * 10,
        "html": "h" * 1_000,
        "attachments": [{"name": "a.pdf", "content_base64": "QUJD" * 25}],
    }
    assert _content_size(submission(message)) == 10 + 1_000 + 100


def test_a_large_html_body_without_attachments_counts() -> None:
    assert _content_size(submission({"subject": "s", "html": "x" * 5_000_000})) == 5_000_000


def test_a_message_without_bodies_weighs_nothing() -> None:
    assert _content_size(submission({"subject": "s"})) == 0
