"""JSON Schema keywords that judge as jsonschema's own do, without quoting the instance.

jsonschema writes each failure's message with the ``repr`` of the value that failed, a whole
list or object included: 454 ms for a reference sent as 7.5 MB of numbers, in C, holding the
interpreter's lock and with it the event loop, though the costly checks run beside it
(docs/performance.md, "Nineteenth pass"). The API never shows those messages: a failure's
details are made of its field, its keyword and the schema's expectation (``document.failure``).
So the keywords that quote a value that can be a list or an object are replaced here, each
deciding exactly as jsonschema's does; the others (a number's bounds, a string's length or
pattern, a format) quote at most a scalar the body holds.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any

from jsonschema import ValidationError

Keyword = Callable[[Any, Any, Any, Mapping[str, Any]], Iterator[ValidationError]]


def _type(
    validator: Any, types: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    names = [types] if isinstance(types, str) else types
    if not any(validator.is_type(instance, name) for name in names):
        yield ValidationError(f"is not of type {', '.join(names)}")


def _enum(
    validator: Any, values: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if all(_canonical(value) != _canonical(instance) for value in values):
        yield ValidationError("is not one of the values allowed")


def _min_items(
    validator: Any, least: int, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "array") and len(instance) < least:
        yield ValidationError("has too few items")


def _max_items(
    validator: Any, most: int, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "array") and len(instance) > most:
        yield ValidationError("has too many items")


def _unique_items(
    validator: Any, unique: bool, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    array = unique and validator.is_type(instance, "array")
    if array and len({_canonical(item) for item in instance}) < len(instance):
        yield ValidationError("has items repeated")


def _min_properties(
    validator: Any, least: int, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "object") and len(instance) < least:
        yield ValidationError("has too few properties")


def _max_properties(
    validator: Any, most: int, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "object") and len(instance) > most:
        yield ValidationError("has too many properties")


def _any_of(
    validator: Any, choices: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    failures: list[ValidationError] = []
    for index, choice in enumerate(choices):
        errors = list(validator.descend(instance, choice, schema_path=index))
        if not errors:
            return
        failures.extend(errors)
    yield ValidationError("is valid under none of the schemas", context=failures)


def _one_of(
    validator: Any, choices: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    failures: list[ValidationError] = []
    remaining = iter(enumerate(choices))
    for index, choice in remaining:
        errors = list(validator.descend(instance, choice, schema_path=index))
        if not errors:
            break
        failures.extend(errors)
    else:
        yield ValidationError("is valid under none of the schemas", context=failures)
        return
    if any(validator.evolve(schema=other).is_valid(instance) for _, other in remaining):
        yield ValidationError("is valid under more than one of the schemas")


def _not(
    validator: Any, refused: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if validator.evolve(schema=refused).is_valid(instance):
        yield ValidationError("is valid under the schema it must not match")


def _canonical(value: Any) -> Hashable:
    """A key equal for two values exactly when JSON Schema calls them equal: ``1`` and
    ``1.0`` are, ``true`` and ``1`` are not, lists item by item, objects whatever their
    order (jsonschema's ``equal``)."""
    if isinstance(value, bool):
        return ("boolean", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, list):
        return ("array", tuple(_canonical(item) for item in value))
    if isinstance(value, dict):
        return ("object", frozenset((name, _canonical(item)) for name, item in value.items()))
    return (type(value).__name__, value)


KEYWORDS: dict[str, Keyword] = {
    "type": _type,
    "enum": _enum,
    "minItems": _min_items,
    "maxItems": _max_items,
    "uniqueItems": _unique_items,
    "minProperties": _min_properties,
    "maxProperties": _max_properties,
    "anyOf": _any_of,
    "oneOf": _one_of,
    "not": _not,
}
"""The replacements, by keyword, for ``validators.extend``."""
