"""The document's validators run each schema with its references inlined
(``inline_references``): they find the same failures, with the same details, as a validator
that resolves every reference, on each component schema's example and on many seeded random
mutations of the examples."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from jsonschema import ValidationError

from mailbox_worker.api.document import (
    DOCUMENT_URI,
    ApiDocument,
    Validator,
    failure,
    inline_references,
    schema_pointer,
)

DOCUMENT = ApiDocument.packaged()
SCHEMAS = DOCUMENT.content["components"]["schemas"]
WITH_EXAMPLES = sorted(name for name, schema in SCHEMAS.items() if "example" in schema)
JUNK: list[Any] = [
    None,
    True,
    0,
    -11,
    1.5,
    "",
    "x",
    "a\nb",
    "QQ=",
    "QQ==",
    "JVBERi0 xLjQ=",
    "not an address",
    "billing@contoso.example",
    "2031-01-01T00:00:00Z",
    "yesterday",
    "https://",
    "send",
    "é" * 300,
    [],
    [{}],
    {},
    {"address": "x@y.example"},
]


def by_references(pointer: str) -> Any:
    """A validator that resolves every reference, as the document's did before."""
    return Validator(
        {"$ref": f"{DOCUMENT_URI}#{pointer}"},
        registry=DOCUMENT._registry,
        format_checker=DOCUMENT._format_checker,
    )


def seen(errors: list[ValidationError]) -> list[tuple[Any, ...]]:
    """What of each error a failure's details are made of (a subschema compared as what it
    is made of, not as written: an inlined one holds no ``$ref``)."""
    return sorted(
        (
            repr(list(error.absolute_path)),
            str(error.validator),
            repr(without_references(error.validator_value)),
            repr(without_references(error.schema)),
            repr(error.cause),
        )
        for error in errors
    )


def without_references(value: Any) -> Any:
    if "$ref" not in repr(value):
        return value
    return inline_references({**DOCUMENT.content, "x-value": value}, "#/x-value")


def mutate(value: Any, generator: random.Random) -> Any:
    """``value`` with one member or item replaced, removed or added, somewhere inside."""
    if isinstance(value, dict) and value and generator.random() < 0.7:
        name = generator.choice(sorted(value))
        choice = generator.random()
        if choice < 0.5:
            return {**value, name: mutate(value[name], generator)}
        if choice < 0.8:
            return {key: item for key, item in value.items() if key != name}
        return {**value, generator.choice(["extra", "priority", "to"]): generator.choice(JUNK)}
    if isinstance(value, list) and value and generator.random() < 0.7:
        index = generator.randrange(len(value))
        if generator.random() < 0.7:
            return [*value[:index], mutate(value[index], generator), *value[index + 1 :]]
        return value + [copy.deepcopy(value[index])] * generator.randrange(1, 60)
    return copy.deepcopy(generator.choice(JUNK))


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_inlined_schemas_fail_as_referenced_ones(name: str) -> None:
    pointer = schema_pointer(name)
    inlined, referenced = DOCUMENT._validator(pointer), by_references(pointer)
    generator = random.Random(name)
    example = SCHEMAS[name]["example"]
    failed = 0
    for attempt in range(600):
        instance = example
        for _ in range(1 + attempt % 3):
            instance = mutate(instance, generator)
        expected = list(referenced.iter_errors(instance))
        found = list(inlined.iter_errors(instance))
        assert seen(found) == seen(expected), instance
        if expected:
            failed += 1
            assert failure(found).details == failure(expected).details
    assert failed  # mutations were refused too


def test_the_hot_schemas_hold_no_reference_once_inlined() -> None:
    for name in ("JobRequest", "JobBatchRequest"):
        assert "$ref" not in repr(inline_references(DOCUMENT.content, f"#{schema_pointer(name)}"))
