"""``parse_json`` refuses an unpaired surrogate escape exactly as the walk of every parsed
string did before the search of the text was put in front of it (on edge cases and on many
seeded random bodies), and answers the same bodies otherwise."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from mailbox_worker.api.parsing import (
    _has_unpaired_surrogate,
    parse_json,
)
from mailbox_worker.errors import InvalidRequest

PIECES = [
    "a",
    "Z9",
    " ",
    "\\\\",  # an escaped backslash: what follows it is text, not an escape
    "\\\\u",
    '\\"',
    "\\n",
    "\\/",
    "\\u00e9",
    "\\u20AC",
    "\\uD83D",  # high halves
    "\\ud800",
    "\\uDBFF",
    "\\uDE00",  # low halves
    "\\udc00",
    "\\uDFFF",
    "\\uD83D\\uDE00",  # a pair
    "\\ud83d\\ude00",
    "é",
    "😀",
    "uD800",
    "\\u0000",
]


def by_the_walk(raw: bytes) -> Any:
    """The answer before: the body, or the message of the refusal of a surrogate."""
    body = json.loads(raw.decode("utf-8-sig"))
    if _has_unpaired_surrogate(body):
        return "the body contains an unpaired UTF-16 surrogate escape"
    return body


def answer(raw: bytes) -> Any:
    try:
        return parse_json(raw)
    except InvalidRequest as refused:
        return refused.message


def random_string(generator: random.Random) -> str:
    return '"' + "".join(generator.choices(PIECES, k=generator.randrange(0, 6))) + '"'


def random_value(generator: random.Random, depth: int = 0) -> str:
    kind = generator.randrange(4 if depth < 3 else 2)
    if kind == 0:
        return random_string(generator)
    if kind == 1:
        return str(generator.randrange(-5, 5))
    items = [random_value(generator, depth + 1) for _ in range(generator.randrange(0, 4))]
    if kind == 2:
        return "[" + ",".join(items) + "]"
    return "{" + ",".join(f"{random_string(generator)}:{item}" for item in items) + "}"


@pytest.mark.parametrize(
    "text",
    [
        '{"a": "\\ud800"}',
        '{"a": "\\udc00"}',
        '{"\\uDE00": 1}',
        '{"a": "\\ud83d\\ude00"}',
        '{"a": "\\\\ud800"}',
        '{"a": "\\\\\\ud800"}',
        '{"a": ["x", {"b": "\\uD83D"}]}',
        '{"a": "😀 é \\u00e9"}',
        '{"a": "\\ud83d\\u00e9"}',
    ],
)
def test_edge_cases_answer_as_the_walk(text: str) -> None:
    raw = text.encode()
    assert answer(raw) == by_the_walk(raw)


def test_random_bodies_answer_as_the_walk() -> None:
    generator = random.Random(20261206)
    refused = 0
    for _ in range(20_000):
        raw = random_value(generator).encode()
        expected = by_the_walk(raw)
        assert answer(raw) == expected, raw
        refused += isinstance(expected, str) and expected.startswith("the body contains")
    assert 0 < refused < 20_000  # both answers were met


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1.5e999", "-1.8e308"])
def test_a_number_beyond_the_double_range_is_refused(number: str) -> None:
    """It would read as an infinity, which I-JSON excludes and no schema check expects."""
    with pytest.raises(InvalidRequest) as refused:
        parse_json(f'{{"priority": {number}}}'.encode())
    assert refused.value.code == "invalid_json"


def test_numbers_within_the_double_range_are_read() -> None:
    body = parse_json(b'{"a": 1.7976931348623157e308, "b": -2.5e-320, "c": 10, "d": 1e2}')
    assert body == {"a": 1.7976931348623157e308, "b": -2.5e-320, "c": 10, "d": 100.0}
