"""``is_standard_base64`` answers as the document's base64 pattern does (with its "no
whitespace" rule), on edge cases and on many random strings."""

from __future__ import annotations

import base64
import random
import re

import pytest

from mailbox_worker.api.document import BASE64_PATTERN, ApiDocument, is_standard_base64
from mailbox_worker.errors import ValidationFailed

REGEX = re.compile(BASE64_PATTERN)
ALPHABET = "ABCxyz019+/=-_ \n\t!é"


def by_the_document(value: str) -> bool:
    return REGEX.search(value) is not None and re.search(r"\s", value) is None


def test_the_pattern_is_the_documents() -> None:
    schema = ApiDocument.packaged().content["components"]["schemas"]["Attachment"]
    assert schema["properties"]["content_base64"]["pattern"] == BASE64_PATTERN


@pytest.mark.parametrize(
    "value",
    [
        "",
        "QQ==",
        "QUI=",
        "QUJD",
        "QUJDRA==",
        "Q",
        "QQ",
        "QQ=",
        "QQ===",
        "=QQ=",
        "QQ==QUJD",
        "QUJD\n",
        "QU JD",
        "QUJD-_",
        "é",
        "QUJ\u00e9",
        "QUJD====",
        "Q===",
        "QUJDR",
        "////",
        "++==",
    ],
)
def test_edge_cases_agree(value: str) -> None:
    assert is_standard_base64(value) is by_the_document(value), repr(value)


def test_random_strings_agree() -> None:
    generator = random.Random(9)
    checked = accepted = 0
    for _ in range(20_000):
        if generator.random() < 0.5:
            raw = generator.randbytes(generator.randrange(0, 12))
            value = base64.b64encode(raw).decode()
            if value and generator.random() < 0.5:
                index = generator.randrange(len(value))
                value = value[:index] + generator.choice(ALPHABET) + value[index + 1 :]
        else:
            value = "".join(generator.choice(ALPHABET) for _ in range(generator.randrange(0, 9)))
        expected = by_the_document(value)
        assert is_standard_base64(value) is expected, repr(value)
        checked += 1
        accepted += expected
    assert 0 < accepted < checked  # both answers were met


def test_the_validator_refuses_bad_base64_with_the_documents_code() -> None:
    document = ApiDocument.packaged()
    attachment = {"filename": "a.pdf", "content_type": "application/pdf", "content_base64": "QQ="}
    with pytest.raises(ValidationFailed) as refused:
        document.validate("/components/schemas/Attachment", attachment)
    assert refused.value.code == "invalid_attachment"
    document.validate("/components/schemas/Attachment", {**attachment, "content_base64": "QQ=="})
