"""The document's validators run each schema with its references inlined
(``inline_references``): they find the same failures, with the same details, as a validator
that resolves every reference, on each component schema's example and on many seeded random
mutations of the examples. The compiled acceptor (``compiled_acceptor``, jsonschema-rs)
accepts exactly what jsonschema accepts, on the same instances."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest
from jsonschema import ValidationError

from mailbox_worker.api.document import (
    DOCUMENT_URI,
    PYTHON_PATTERN,
    ApiDocument,
    Validator,
    compiled_acceptor,
    failure,
    inline_references,
    schema_pointer,
)
from mailbox_worker.errors import ValidationFailed

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
    # Where Python's regular expressions and ECMA-262's differ: \s (\x1c-\x1f and \x85
    # are white space to Python only, \ufeff to ECMA-262 only) and $ before a final \n.
    "\x1c",
    "a\x1fb",
    "\x85",
    "\ufeff",
    "abc\n",
    "INV-1\n",
    "\u2028",
    "x@y.example\n",
    "2031-01-01T00:00:00Z\n",
    "JVBERi0xLjQ=\n",
    2**70,
    1.0,
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


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_the_compiled_acceptor_accepts_what_jsonschema_accepts(name: str) -> None:
    pointer = schema_pointer(name)
    validator = DOCUMENT._validator(pointer)
    accepts = compiled_acceptor(inline_references(DOCUMENT.content, f"#{pointer}"))
    assert accepts is not None
    generator = random.Random(f"acceptor {name}")
    example = SCHEMAS[name]["example"]
    counts = {True: 0, False: 0}
    for attempt in range(600):
        instance = example
        for _ in range(1 + attempt % 3):
            instance = mutate(instance, generator)
        valid = not list(validator.iter_errors(instance))
        assert accepts(instance) == valid, instance
        counts[valid] += 1
    assert accepts(example)
    assert counts[False]  # mutations were refused too


def test_every_schema_compiles_and_the_idempotency_key_is_checked_alike() -> None:
    for name in SCHEMAS:
        schema = inline_references(DOCUMENT.content, f"#{schema_pointer(name)}")
        assert compiled_acceptor(schema) is not None, name
    pointer = "/components/parameters/IdempotencyKey/schema"
    validator = DOCUMENT._validator(pointer)
    accepts = compiled_acceptor(inline_references(DOCUMENT.content, f"#{pointer}"))
    assert accepts is not None
    for key in ["order-1", "", "a" * 300, "a b", "a\x1cb", "abc\n", "é", "\ufeff", 7]:
        assert accepts(key) == (not list(validator.iter_errors(key))), key


def test_patterns_are_matched_by_python_in_the_compiled_acceptor() -> None:
    """Only keywords are renamed: a property named ``pattern`` keeps its name."""
    schema = {
        "type": "object",
        "properties": {"pattern": {"type": "string", "pattern": "\\S"}},
        "additionalProperties": False,
    }
    accepts = compiled_acceptor(schema)
    assert accepts is not None
    assert accepts({"pattern": "x"})
    assert not accepts({"pattern": "\x1c"})  # white space to Python's re, not to ECMA-262
    assert not accepts({"other": "x"})
    assert PYTHON_PATTERN not in repr(schema)  # the caller's schema is left as it was


def test_an_instance_the_compiled_acceptor_cannot_take_goes_to_jsonschema() -> None:
    document = ApiDocument(
        json.dumps(
            {"components": {"schemas": {"Key": {"type": "string", "maxLength": 5}}}}
        ).encode()
    )
    pointer = schema_pointer("Key")
    unpaired = "\ud800"  # a lone surrogate: jsonschema-rs cannot convert it
    assert not document.accepts(pointer, unpaired)
    document.validate(pointer, unpaired)  # jsonschema: a string of one character, valid
    with pytest.raises(ValidationFailed):
        document.validate(pointer, "\ud800" * 6)


def test_a_schema_the_renaming_does_not_walk_gets_no_compiled_acceptor() -> None:
    """A pattern under ``patternProperties`` (or ``if``...) would be run by jsonschema-rs's
    own expressions, whose white space is not Python's: such a schema is jsonschema's alone."""
    schema = {"patternProperties": {"": {"not": {"pattern": "\\s"}}}}
    assert compiled_acceptor(schema) is None
    schemas = {"Loose": schema}
    document = ApiDocument(json.dumps({"components": {"schemas": schemas}}).encode())
    with pytest.raises(ValidationFailed):
        document.validate(schema_pointer("Loose"), {"k": "\x1c"})  # white space to Python
