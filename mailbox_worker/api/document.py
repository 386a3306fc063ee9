"""The OpenAPI document shipped with the package, and request validation against it.

The document (``openapi.json``) is the single source of truth for what a request may
contain: bodies and the ``Idempotency-Key`` header are checked with JSON Schema 2020-12
against its component schemas, with ``format`` asserted for ``email``, ``date-time``,
``uri`` and ``origin`` by the checkers below (standard library only, the same on every
installation). A compiled validator (jsonschema-rs, ``compiled_acceptor``) answers first and
only ever accepts; what it does not accept is validated by jsonschema, which names the
failures.

Two extension keywords in the document shape the answers: ``x-error-code`` (the stable code
of a failure in that schema, e.g. ``invalid_address``; ``invalid_request`` otherwise) and
``x-error-message`` (its human message). A failure's details name the field and the problem,
never the value sent.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.resources
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import jsonschema_rs
from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from mailbox_worker.api import schema_keywords
from mailbox_worker.errors import ValidationFailed
from mailbox_worker.policy.addresses import is_email_address
from mailbox_worker.policy.origins import normalise_origin

DOCUMENT_URI = "urn:mailbox-worker:openapi"
ROOT_FIELD = "(body)"
MAX_DETAILS = 50
MAX_FIELD_NAME = 100
DEFAULT_CODE = "invalid_request"

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})", re.ASCII
)
_URI = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*:(?:[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*"
)
_TYPE_NAMES = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def read_document() -> bytes:
    """The raw bytes of the packaged ``openapi.json``."""
    return importlib.resources.files("mailbox_worker.api").joinpath("openapi.json").read_bytes()


class ApiDocument:
    """The parsed document, its raw bytes (served as is) and validators built from it."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.content: dict[str, Any] = json.loads(raw)
        resource: Resource[Any] = Resource.from_contents(
            self.content, default_specification=DRAFT202012
        )
        self._registry: Registry[Any] = Registry().with_resource(DOCUMENT_URI, resource)
        self._format_checker = format_checker()
        self._validators: dict[str, Any] = {}
        self._acceptors: dict[str, Callable[[Any], bool] | None] = {}

    @classmethod
    def packaged(cls) -> ApiDocument:
        return cls(read_document())

    def validate(self, pointer: str, instance: Any) -> None:
        """Raise ``ValidationFailed`` unless ``instance`` matches the schema at ``pointer``.

        ``pointer`` is a JSON pointer into the document, e.g.
        ``/components/schemas/JobRequest``. The compiled acceptor answers first; only what it
        does not accept is validated again, by jsonschema, for the failures' details.
        """
        if self.accepts(pointer, instance):
            return
        errors = list(self._validator(pointer).iter_errors(instance))
        if errors:
            raise failure(errors)

    def validate_items(
        self, pointer: str, instance: Any, field: str
    ) -> dict[int, ValidationFailed]:
        """Check ``instance`` against the schema at ``pointer`` as ``validate`` does, except
        that the items of its array ``field`` fail on their own: the failures inside item
        ``i`` are answered, by index, instead of raised (anything else is raised)."""
        if self.accepts(pointer, instance):
            return {}
        whole: list[ValidationError] = []
        by_item: dict[int, list[ValidationError]] = {}
        for error in self._validator(pointer).iter_errors(instance):
            path = list(error.absolute_path)
            if len(path) >= 2 and path[0] == field and isinstance(path[1], int):
                by_item.setdefault(path[1], []).append(error)
            else:
                whole.append(error)
        if whole:
            raise failure(whole)
        return {index: failure(errors) for index, errors in by_item.items()}

    def accepts(self, pointer: str, instance: Any) -> bool:
        """Whether the schema at ``pointer`` accepts ``instance``, by its compiled acceptor
        (``compiled_acceptor``), built once. Where it does not, ``validate`` names the
        failures, at several times the cost."""
        if pointer not in self._acceptors:
            schema = inline_references(self.content, f"#{pointer}")
            self._acceptors[pointer] = compiled_acceptor(schema)
        acceptor = self._acceptors[pointer]
        return acceptor is not None and acceptor(instance)

    def _validator(self, pointer: str) -> Any:
        """The validator of the schema at ``pointer``, built once: of the schema with its
        references replaced by what they point to (``inline_references``)."""
        validator = self._validators.get(pointer)
        if validator is None:
            validator = Validator(
                inline_references(self.content, f"#{pointer}"),
                registry=self._registry,
                format_checker=self._format_checker,
            )
            self._validators[pointer] = validator
        return validator


def inline_references(content: Mapping[str, Any], reference: str) -> Any:
    """The schema ``reference`` (``#/a/b``) points to in ``content``, with each ``$ref`` that
    is alone in its object replaced by the schema it points to, recursively.

    Validation is the same, failure by failure (a reference adds nothing to an error's path
    or schema; tests/unit/test_openapi_document.py compares them), and costs 44 % less:
    jsonschema resolves a reference through ``referencing`` each time it meets it, about 11
    times per ``JobRequest`` (docs/performance.md, "The enqueue request"). A reference beside
    other keywords becomes a member of their ``allOf`` (2020-12 applies both alike); one
    inside its own target is kept, made absolute (``DOCUMENT_URI``) so that it resolves in
    the registry from anywhere.
    """

    def inline(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [inline(item, seen) for item in node]
        if not isinstance(node, Mapping):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            if ref not in seen and len(node) == 1:
                return inline(_target(content, ref), (*seen, ref))
            if ref not in seen and "allOf" not in node:
                # Beside other keywords, a reference applies as one more ``allOf`` member.
                others = {key: value for key, value in node.items() if key != "$ref"}
                return {**inline(others, seen), "allOf": [inline({"$ref": ref}, seen)]}
            node = {**node, "$ref": DOCUMENT_URI + ref}
        return {key: inline(value, seen) for key, value in node.items()}

    return inline(_target(content, reference), (reference,))


def _target(content: Mapping[str, Any], reference: str) -> Any:
    """What the JSON pointer fragment ``reference`` (``#/a/b``) names in ``content``."""
    node: Any = content
    for part in reference[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


BASE64_PATTERN = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
"""The document's pattern of standard padded base64 (``Attachment.content_base64``)."""


_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def is_standard_base64(value: str) -> bool:
    """Whether ``value`` matches ``BASE64_PATTERN``: groups of four characters of the
    alphabet, the last one ending in at most two ``=``. Checked by deleting the alphabet from
    the bytes (``bytes.translate``, about 50 µs per 100 KB attachment; ``binascii``'s strict
    decoding took 260 µs, the regular expression 1.6 ms: docs/performance.md)."""
    if not value.isascii() or len(value) % 4:
        return False
    data = value.rstrip("=")
    if len(value) - len(data) > 2:
        return False  # "QUJD====", "A==="
    return not data.encode("ascii").translate(None, _BASE64_ALPHABET)


SPACE_PATTERN = "\\s"
"""The document's pattern of "any white space" (under ``not``: ``Attachment.content_base64``)."""
_ASCII_SPACES = "".join(chr(code) for code in range(128) if re.match(SPACE_PATTERN, chr(code)))
"""The ASCII characters ``\\s`` matches (``\\x1c`` to ``\\x1f`` too, in Python), from ``re``."""


def has_space(value: str) -> bool:
    """Whether ``SPACE_PATTERN`` finds a match in ``value``: for ASCII text, one ``memchr``
    per white-space character (12 µs per 100 KB attachment instead of the regular
    expression's 340 µs, which tests each character in turn)."""
    if value.isascii():
        return any(space in value for space in _ASCII_SPACES)
    return re.search(SPACE_PATTERN, value) is not None


def pattern_matcher(pattern: str) -> Callable[[str], bool]:
    """Whether a string matches ``pattern`` as JSON Schema's ``pattern`` asks (a search, with
    Python's ``re``), the base64 pattern by ``is_standard_base64`` and the white-space one by
    ``has_space``: the two that meet a whole attachment. Both validators use it
    (``Validator``, ``compiled_acceptor``), so a pattern means the same to each."""
    if pattern == BASE64_PATTERN:
        return is_standard_base64
    if pattern == SPACE_PATTERN:
        return has_space
    search = re.compile(pattern).search
    return lambda value: search(value) is not None


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    """The ``pattern`` keyword, by ``pattern_matcher``."""
    if isinstance(instance, str) and not _matcher(pattern)(instance):
        yield ValidationError(f"does not match {pattern!r}")


_matcher = functools.lru_cache(maxsize=256)(pattern_matcher)
Validator = validators.extend(
    Draft202012Validator, {"pattern": _pattern, **schema_keywords.KEYWORDS}
)
"""JSON Schema 2020-12 as jsonschema implements it, but for the ``pattern`` above and the
keywords that would quote a whole list or object in their messages (``schema_keywords``)."""


# -- the compiled acceptor ----------------------------------------------------------------

PYTHON_PATTERN = "x-python-pattern"
"""What ``compiled_acceptor`` renames ``pattern`` to: a keyword of its own, run in Python."""
SCHEMA_MEMBER = ("additionalProperties", "items", "not", "propertyNames", "contains")
SCHEMA_LIST = ("allOf", "anyOf", "oneOf", "prefixItems")
SCHEMA_MAP = ("properties", "$defs", "dependentSchemas")
"""The keywords whose values are schemas: one, a list of them, or a map to them."""
UNWALKED = frozenset(
    {
        "$ref",
        "$dynamicRef",
        "patternProperties",
        "if",
        "then",
        "else",
        "unevaluatedItems",
        "unevaluatedProperties",
        "dependencies",
        "contentSchema",
    }
)
"""Keywords ``_with_python_patterns`` does not walk (a pattern under one would be run by
jsonschema-rs's own expressions): a schema with one gets no compiled acceptor."""


class _PythonPattern:
    """``pattern`` as a custom keyword of jsonschema-rs, matched by ``pattern_matcher``."""

    def __init__(self, parent_schema: Any, value: str, schema_path: Any) -> None:
        self._matches = _matcher(value)

    def validate(self, instance: Any) -> None:
        if isinstance(instance, str) and not self._matches(instance):
            raise ValueError("does not match the pattern")


def compiled_acceptor(schema: Any) -> Callable[[Any], bool] | None:
    """Whether ``schema`` (inlined: no ``$ref``) accepts an instance, by jsonschema-rs, a
    compiled validator: about a third of jsonschema's time on a ``JobRequest``
    (docs/performance.md, "Fifth pass"). It only ever accepts: a refusal, or an instance it
    cannot take (a lone surrogate), goes to jsonschema, which names the failures.

    What could make the two disagree is done by this package's own code in both: each
    ``format`` by the checkers below, each ``pattern`` by ``pattern_matcher`` (Python's
    ``re``, not the ECMA-262 expressions jsonschema-rs runs: their ``\\s`` and ``$`` differ).
    ``tests/unit/test_document_validators.py`` compares the two on seeded random requests.

    None (jsonschema validates everything) for a schema with a keyword the renaming does not
    walk (``UNWALKED``): none of the document's has one (tested)."""
    try:
        renamed = _with_python_patterns(schema)
    except _Unwalked:
        return None
    validator = jsonschema_rs.Draft202012Validator(
        renamed,
        formats={
            "email": is_email_address,
            "date-time": is_date_time,
            "uri": is_uri,
            "origin": _is_valid_origin,
        },
        validate_formats=True,
        keywords={PYTHON_PATTERN: _PythonPattern},
    )

    def accepts(instance: Any) -> bool:
        try:
            return bool(validator.is_valid(instance))
        except Exception:  # a value it cannot convert (a lone surrogate): jsonschema decides
            return False

    return accepts


class _Unwalked(Exception):
    """A schema holds a keyword of ``UNWALKED``."""


def _with_python_patterns(schema: Any) -> Any:
    """``schema`` with each ``pattern`` keyword renamed ``PYTHON_PATTERN`` (only keywords:
    a property named ``pattern`` keeps its name)."""
    if not isinstance(schema, Mapping):
        return schema
    copied: dict[str, Any] = {}
    for keyword, value in schema.items():
        if keyword in UNWALKED:
            raise _Unwalked(keyword)
        if keyword == "pattern":
            copied[PYTHON_PATTERN] = value
        elif keyword in SCHEMA_MEMBER:
            copied[keyword] = _with_python_patterns(value)
        elif keyword in SCHEMA_LIST and isinstance(value, list):
            copied[keyword] = [_with_python_patterns(item) for item in value]
        elif keyword in SCHEMA_MAP and isinstance(value, Mapping):
            copied[keyword] = {name: _with_python_patterns(item) for name, item in value.items()}
        else:
            copied[keyword] = value
    return copied


def schema_pointer(name: str) -> str:
    return f"/components/schemas/{name}"


# -- formats ------------------------------------------------------------------------------


def format_checker() -> FormatChecker:
    """Assertions for the formats the document uses, and only those."""
    checker = FormatChecker(formats=())
    checker.checks("email")(is_email_address)
    checker.checks("date-time")(is_date_time)
    checker.checks("uri")(is_uri)
    checker.checks("origin", raises=ValueError)(is_origin)
    return checker


def is_date_time(value: object) -> bool:
    """An RFC 3339 date-time with an offset (upper-case ``T`` and ``Z``)."""
    if not isinstance(value, str):
        return True
    if not _RFC3339.fullmatch(value):
        return False
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def is_uri(value: object) -> bool:
    """An absolute RFC 3986 URI (ASCII, valid percent-escapes); http(s) ones need a host."""
    if not isinstance(value, str):
        return True
    if not _URI.fullmatch(value):
        return False
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return False
    return parts.scheme.lower() not in {"http", "https"} or bool(parts.hostname)


def _is_valid_origin(value: object) -> bool:
    """``is_origin`` as a plain answer (the compiled acceptor's format check)."""
    try:
        return is_origin(value)
    except ValueError:
        return False


def is_origin(value: object) -> bool:
    """An origin an account may declare; otherwise ``normalise_origin``'s ``ValueError``,
    whose message (it never quotes the value) becomes the failure's detail."""
    if isinstance(value, str):
        normalise_origin(value)
    return True


# -- failures -----------------------------------------------------------------------------


def failure(errors: Iterable[ValidationError]) -> ValidationFailed:
    """One ``ValidationFailed`` naming every field at fault (at most ``MAX_DETAILS``)."""
    details = sorted(
        {(field, code, message) for error in errors for field, code, message in _details(error)}
    )
    if not details:
        details = [(ROOT_FIELD, DEFAULT_CODE, "is invalid")]
    shown = [{"field": f, "code": c, "message": m} for f, c, m in details[:MAX_DETAILS]]
    codes = {detail["code"] for detail in shown}
    code = codes.pop() if len(codes) == 1 else DEFAULT_CODE
    first = shown[0]
    summary = f"{first['field']} {first['message']}"
    if len(details) > 1:
        summary = f"{len(details)} problems in the request; first: {summary}"
    return ValidationFailed(summary, shown, code=code)


def _details(error: ValidationError) -> Iterator[tuple[str, str, str]]:
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    code = str(schema.get("x-error-code", DEFAULT_CODE))
    path = list(error.absolute_path)
    keyword = error.validator
    if keyword == "required" and isinstance(error.instance, Mapping):
        for name in error.validator_value:
            if name not in error.instance:
                yield field_path([*path, name]), code, "is required"
    elif keyword == "additionalProperties" and isinstance(error.instance, Mapping):
        known = schema.get("properties", {})
        for name in error.instance:
            if name not in known:
                yield field_path([*path, str(name)]), code, "is not a known field"
    elif keyword == "format" and isinstance(error.cause, ValueError) and str(error.cause):
        yield field_path(path), code, str(error.cause)  # the checker's own reason
    else:
        yield field_path(path), code, _message(keyword, error.validator_value, schema)


def _message(keyword: Any, expected: Any, schema: Mapping[str, Any]) -> str:
    custom = schema.get("x-error-message")
    if custom and keyword in {"pattern", "format", "not", "anyOf"}:
        return str(custom)
    match keyword:
        case "type":
            names = [expected] if isinstance(expected, str) else list(expected)
            return "must be " + " or ".join(_TYPE_NAMES.get(name, name) for name in names)
        case "enum":
            return "must be one of: " + ", ".join(json.dumps(value) for value in expected)
        case "const":
            return f"must be {json.dumps(expected)}"
        case "minLength":
            return f"must have at least {expected} character{_plural(expected)}"
        case "maxLength":
            return f"must have at most {expected} character{_plural(expected)}"
        case "minItems":
            return f"must have at least {expected} item{_plural(expected)}"
        case "maxItems":
            return f"must have at most {expected} item{_plural(expected)}"
        case "uniqueItems":
            return "must not repeat an item"
        case "format":
            return f"must be a valid {expected}"
        case "pattern":
            return "has an invalid form"
        case _:
            return "is invalid"


def _plural(count: Any) -> str:
    return "" if count == 1 else "s"


def field_path(path: Sequence[str | int]) -> str:
    """``["message", "to", 0, "address"]`` → ``message.to[0].address``; ``[]`` → ``(body)``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = part if len(part) <= MAX_FIELD_NAME else part[:MAX_FIELD_NAME] + "…"
            text += f".{name}" if text else name
    return text or ROOT_FIELD
