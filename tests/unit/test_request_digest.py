"""The intake's request digest is the SHA-256 of the body's canonical JSON (sorted keys, no
spaces, UTF-8), as it always was, though attachments are hashed without being dumped: the
same digests on edge cases and on many seeded random bodies (idempotency keys stored before
this change answer the same requests after it). The payload the enqueue stores is spliced the
same way (``jobs/message_json.py``) and is exactly ``json.dumps``'s text."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from typing import Any

import pytest

from mailbox_worker.jobs.intake import _message_of, _request_digest
from mailbox_worker.jobs.message_json import dumps_message, mark, pieces

TEXTS = ["", "a", "é", "😀", '"', "\\", "\n", "\x00", "\x00attachment:0", '"\x00attachment:1']


def canonical_digest(body: Any) -> str:
    """The digest as it was computed before."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def attachment(generator: random.Random) -> Any:
    content: Any = base64.b64encode(generator.randbytes(generator.randrange(0, 40))).decode()
    if generator.random() < 0.2:
        content = content + generator.choice(TEXTS)  # not base64: the whole dump answers
    if generator.random() < 0.05:
        content = 42
    item: dict[str, Any] = {
        "filename": generator.choice(["a.pdf", "é.pdf", "\x00attachment:0"]),
        "content_type": "application/pdf",
        "content_base64": content,
    }
    if generator.random() < 0.05:
        del item["content_base64"]
    return item


def random_body(generator: random.Random) -> Any:
    message: dict[str, Any] = {
        "to": [{"address": "ap@fabrikam.example", "name": generator.choice(TEXTS)}],
        "subject": "".join(generator.choices(TEXTS, k=3)),
        "text": "".join(generator.choices(TEXTS, k=4)),
    }
    shape = generator.random()
    if shape < 0.8:
        message["attachments"] = [attachment(generator) for _ in range(generator.randrange(4))]
    elif shape < 0.9:
        message["attachments"] = {"0": attachment(generator)}
    body: dict[str, Any] = {"mailbox_id": "mbx_1", "mode": "send", "message": message}
    if generator.random() < 0.3:
        body["zz"] = generator.choice(TEXTS)
    return body


@pytest.mark.parametrize(
    "body",
    [
        {},
        [],
        {"message": None},
        {"message": {"attachments": []}},
        {"message": {"attachments": [{"content_base64": "QQ=="}]}, "x": "\x00attachment:0"},
        {"message": {"attachments": [{"content_base64": "QQ=="}]}, "x": '"\x00attachment:0"'},
        {"message": {"attachments": [{"content_base64": "QQ=="}, {"content_base64": "QUI="}]}},
    ],
)
def test_edge_cases_digest_as_before(body: Any) -> None:
    assert _request_digest(body, mark(_message_of(body))) == canonical_digest(body)


def test_random_bodies_digest_as_before() -> None:
    generator = random.Random(9)
    for _ in range(5_000):
        body = random_body(generator)
        assert _request_digest(body, mark(_message_of(body))) == canonical_digest(body), body


@pytest.mark.parametrize(
    "message",
    [
        None,
        {},
        {"attachments": []},
        {"attachments": [{"content_base64": "QQ=="}], "x": "\x00attachment:0"},
        {"attachments": [{"content_base64": "QQ=="}], "x": '"\x00attachment:0"'},
        {"attachments": [{"content_base64": "QQ=="}, {"content_base64": "QUI="}]},
        {"attachments": [{"content_base64": "QQ=="}, {"filename": "no content"}]},
        {"attachments": [{"content_base64": "é"}]},
    ],
)
def test_edge_case_payloads_dump_as_json_dumps(message: Any) -> None:
    assert dumps_message(message) == json.dumps(message)


def test_random_payloads_dump_as_json_dumps() -> None:
    generator = random.Random(11)
    spliced = 0
    for _ in range(5_000):
        message = random_body(generator)["message"]
        assert dumps_message(message) == json.dumps(message), message
        spliced += len(pieces(message, json.dumps, mark(message))) > 1
    assert (
        spliced > 100
    )  # some of the seeded bodies take the splice (223 of them), not the whole dump


def base64_body(generator: random.Random) -> Any:
    """A body as the API lets one through: every attachment's content standard base64."""
    attachments = [
        {
            "filename": generator.choice(["a.pdf", "é.pdf", "\x00attachment:0"]),
            "content_type": "application/pdf",
            "content_base64": base64.b64encode(
                generator.randbytes(generator.randrange(40))
            ).decode(),
        }
        for _ in range(generator.randrange(4))
    ]
    body = random_body(generator)
    body["message"]["attachments"] = attachments
    return body


def test_checked_base64_marks_as_the_check_does() -> None:
    """A validated submission's contents are base64, which needs no JSON escape: marked
    without reading them again, the message is marked as with the check, and its digest and
    stored JSON are the same."""
    generator = random.Random(13)
    for _ in range(2_000):
        body = base64_body(generator)
        message = _message_of(body)
        checked = mark(message, base64_checked=True)
        assert checked == mark(message), body
        assert _request_digest(body, checked) == canonical_digest(body), body
        assert dumps_message(message, checked) == json.dumps(message), body


def test_checked_base64_is_not_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    def read(text: str) -> bool:
        raise AssertionError("a checked content was read again")

    monkeypatch.setattr("mailbox_worker.jobs.message_json.json_plain", read)
    message = {"attachments": [{"content_base64": "QUJD"}, {"content_base64": "QQ=="}]}
    marked = mark(message, base64_checked=True)
    assert marked is not None and marked.contents == ["QUJD", "QQ=="]
    with pytest.raises(AssertionError):
        mark(message)
