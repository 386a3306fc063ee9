"""``is_standard_base64`` answers as the document's base64 pattern does (with its "no
whitespace" rule), and ``has_space`` as its white-space pattern does, on edge cases and on
many random strings; the intake's ``decoded_size`` is the length base64 decodes to."""

from __future__ import annotations

import base64
import random
import re

import pytest

from mailbox_worker.api.document import (
    BASE64_PATTERN,
    SPACE_PATTERN,
    ApiDocument,
    has_space,
    is_standard_base64,
)
from mailbox_worker.errors import ValidationFailed
from mailbox_worker.jobs.intake import decoded_size

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


def test_the_space_pattern_is_the_documents_and_has_space_answers_as_it() -> None:
    schema = ApiDocument.packaged().content["components"]["schemas"]["Attachment"]
    assert schema["properties"]["content_base64"]["not"]["pattern"] == SPACE_PATTERN
    generator = random.Random(6)
    characters = ALPHABET + "\x0b\x0c\r\x1c\x1f\x85\xa0\u2028\u3000x"
    found = 0
    for _ in range(20_000):
        value = "".join(generator.choices(characters, k=generator.randrange(0, 9)))
        expected = re.search(SPACE_PATTERN, value) is not None
        assert has_space(value) is expected, repr(value)
        found += expected
    assert 0 < found < 20_000


def test_the_decoded_size_is_the_length_of_the_decoded_bytes() -> None:
    generator = random.Random(7)
    for length in range(200):
        raw = generator.randbytes(length)
        assert decoded_size(base64.b64encode(raw).decode()) == length
    assert decoded_size("QQ=") is None
    assert decoded_size("JVBERi0xLjQ") is None
