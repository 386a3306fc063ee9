"""The API's validator judges as jsonschema's own, keyword by keyword, without quoting the
value at fault (``api/schema_keywords.py``): a ``repr`` of a 7.5 MB list held the event loop
for 454 ms."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator, ValidationError

from mailbox_worker.api.document import ApiDocument, Validator, schema_pointer
from mailbox_worker.api.schema_keywords import KEYWORDS
from mailbox_worker.errors import ValidationFailed

SCHEMAS: dict[str, dict[str, Any]] = {
    "type": {"type": "string"},
    "types": {"type": ["integer", "null"]},
    "enum": {"enum": ["send", "draft", 1, [1, True], {"a": [1]}, None]},
    "minItems": {"minItems": 2},
    "maxItems": {"maxItems": 1},
    "uniqueItems": {"uniqueItems": True},
    "minProperties": {"minProperties": 1},
    "maxProperties": {"maxProperties": 1},
    "anyOf": {"anyOf": [{"required": ["text"]}, {"required": ["html"]}]},
    "oneOf": {
        "oneOf": [{"type": "integer"}, {"type": "number"}, {"type": "string", "maxLength": 2}]
    },
    "not": {"not": {"type": "array", "minItems": 1}},
    "nested": {
        "type": "object",
        "properties": {"to": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}},
    },
}
INSTANCES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    1.0,
    2.5,
    "",
    "x",
    "xyz",
    "send",
    "draft",
    [],
    [1],
    [1, 1.0],
    [1, True],
    [True, True],
    [0, False],
    ["a", "b", "a"],
    [[1, True], [1, True]],
    [{"a": 1, "b": 2}, {"b": 2, "a": 1}],
    [{"a": 1}, {"a": 1.0}],
    {},
    {"a": [1]},
    {"a": [1.0]},
    {"text": "t"},
    {"text": "t", "html": "h"},
    {"to": ["a", "c", "b"]},
    {"to": "a"},
]
assert set(KEYWORDS) <= set(SCHEMAS)  # every replacement is compared below


def _judged(validator: Any, instance: Any) -> list[tuple[Any, ...]]:
    """Each failure as the API reads it: its keyword, its place, the schema's expectation,
    and the same of the failures it holds (``anyOf``, ``oneOf``)."""

    def key(error: ValidationError) -> tuple[Any, ...]:
        context = sorted(map(key, error.context))
        path = list(error.absolute_path)
        return (error.validator, path, json.dumps(error.validator_value), context)

    return sorted(map(key, validator.iter_errors(instance)))


@pytest.mark.parametrize("name", SCHEMAS)
@pytest.mark.parametrize("instance", INSTANCES, ids=json.dumps)
def test_each_keyword_fails_what_jsonschemas_own_fails(name: str, instance: Any) -> None:
    schema = SCHEMAS[name]

    ours = _judged(Validator(schema), instance)
    theirs = _judged(Draft202012Validator(schema), instance)

    assert ours == theirs


class Unquotable(list[Any]):
    """A list whose ``repr`` fails the test: what jsonschema's keywords call for a message."""

    def __repr__(self) -> str:
        raise AssertionError("the value at fault was quoted")


class UnquotableObject(dict[str, Any]):
    """An object whose ``repr`` fails the test."""

    def __repr__(self) -> str:
        raise AssertionError("the value at fault was quoted")


@pytest.mark.parametrize("name", [*KEYWORDS, "nested"])
def test_no_keyword_quotes_the_value_at_fault(name: str) -> None:
    """Each schema fails this list (or an object holding it), and no keyword writes it out."""
    schema = SCHEMAS[name]
    instance: Any = Unquotable([1, 1, {"a": 2}])
    if name in {"minProperties", "anyOf"}:
        instance = UnquotableObject()
    elif name == "maxProperties":
        instance = UnquotableObject(text=instance, html=instance)
    elif name == "minItems":
        instance = Unquotable([1])
    elif name == "nested":
        instance = {"to": instance}
    with pytest.raises(AssertionError, match="quoted"):
        list(Draft202012Validator(schema).iter_errors(instance))  # the test can fail

    errors = list(Validator(schema).iter_errors(instance))

    assert errors


def test_a_body_of_millions_of_numbers_is_explained_by_field() -> None:
    """What the API answers for a reference sent as a list of numbers: the field and what it
    must be, from the document's own messages."""
    body = {
        "mailbox_id": "mbx_0123456789abcdef0123456789abcdef",
        "mode": "send",
        "reference": Unquotable([0.5] * 100_000),
        "message": {"to": [{"address": "a@b.example"}], "subject": "s", "text": "t"},
    }

    with pytest.raises(ValidationFailed) as refused:
        ApiDocument.packaged().validate(schema_pointer("JobRequest"), body)

    assert refused.value.details == [
        {"field": "reference", "code": "invalid_request", "message": "must be a string"}
    ]
