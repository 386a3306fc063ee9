"""The stable codes: one registry in ``mailbox_worker/errors.py``, the same sets as enums in
the API document, and no code raised in the package that the registry does not list."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest

import mailbox_worker
from mailbox_worker.api.document import read_document
from mailbox_worker.errors import (
    API_ERROR_CODES,
    INTERNAL_CODES,
    JOB_CODES,
    MAILBOX_REASONS,
    CodeMeaning,
)

PACKAGE = Path(mailbox_worker.__file__).parent
DOCUMENT = json.loads(read_document())
SCHEMAS = DOCUMENT["components"]["schemas"]
EVERY_CODE = {*API_ERROR_CODES, *JOB_CODES, *MAILBOX_REASONS, *INTERNAL_CODES}

# Calls whose parameter holding a code is not named ``code``: callee name → argument index.
# (Every function, method or dataclass with a ``code`` parameter is found by the scan.)
REASON_PARAMETERS = {"set_state": 2, "require_consent_again": 1}
# (A consent's ``outcome``, sent to the admin's browser, is checked against ``OUTCOMES`` and
# the admin page's wording: mailboxes/service.py, api/admin_wording.py.)


def _strings(node: ast.AST | None) -> Iterator[str]:
    """String constants of ``node``: itself, or both branches of a conditional expression."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.IfExp):
        yield from _strings(node.body)
        yield from _strings(node.orelse)


def _callee(call: ast.Call) -> str:
    function = call.func
    if isinstance(function, ast.Attribute):
        return function.attr
    return function.id if isinstance(function, ast.Name) else ""


def code_positions(trees: Iterable[ast.AST]) -> dict[str, set[int]]:
    """Callee name → the positional index of its ``code`` parameter: for every function and
    method (``self`` and ``cls`` not counted) and every dataclass-like class (fields in order)
    defined in ``trees``, plus ``REASON_PARAMETERS``."""
    positions: dict[str, set[int]] = {name: {index} for name, index in REASON_PARAMETERS.items()}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                arguments = [*node.args.posonlyargs, *node.args.args]
                names = [a.arg for a in arguments if a.arg not in {"self", "cls"}]
            elif isinstance(node, ast.ClassDef):
                names = [
                    field.target.id
                    for field in node.body
                    if isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)
                ]
                for method in node.body:  # a class called with its __init__'s arguments
                    if isinstance(method, ast.FunctionDef) and method.name == "__init__":
                        arguments = [*method.args.posonlyargs, *method.args.args][1:]
                        names = [argument.arg for argument in arguments]
            else:
                continue
            if "code" in names:
                positions.setdefault(node.name, set()).add(names.index("code"))
    return positions


def codes_in(tree: ast.AST, positions: Mapping[str, set[int]]) -> Iterator[tuple[str, int]]:
    """Every code the module states: ``code=...`` arguments and ``code = ...`` assignments,
    codes passed positionally where the callee takes its ``code`` (``positions``), strings
    returned by a ``*_code`` function and the values of a ``*_CODES`` mapping."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "code":
                    yield from ((code, node.lineno) for code in _strings(keyword.value))
            for index in positions.get(_callee(node), ()):
                if len(node.args) > index:
                    yield from ((code, node.lineno) for code in _strings(node.args[index]))
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id == "code":
                    yield from ((code, node.lineno) for code in _strings(node.value))
                if (
                    isinstance(target, ast.Name)
                    and target.id.endswith("_CODES")
                    and isinstance(node.value, ast.Dict)
                ):
                    for value in node.value.values:
                        yield from ((code, node.lineno) for code in _strings(value))
        elif isinstance(node, ast.FunctionDef) and node.name.endswith("_code"):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Return):
                    yield from ((code, inner.lineno) for code in _strings(inner.value))


def stated_codes() -> set[tuple[str, str]]:
    modules = {
        path.relative_to(PACKAGE): ast.parse(path.read_text(), str(path))
        for path in sorted(PACKAGE.rglob("*.py"))
        # the fake providers speak the providers' codes
        if path.relative_to(PACKAGE).parts[0] != "sandbox"
    }
    positions = code_positions(modules.values())
    return {
        (code, f"{relative}:{line}")
        for relative, tree in modules.items()
        for code, line in codes_in(tree, positions)
    }


def test_every_code_the_package_states_is_in_the_registry() -> None:
    stated = stated_codes()
    assert len({code for code, _ in stated}) > 60  # the scan finds them (a scan that broke)
    missing = sorted(f"{code} ({where})" for code, where in stated if code not in EVERY_CODE)
    assert missing == []


def test_the_scan_finds_a_code_given_in_each_form() -> None:
    source = """
raise Conflict("x", code="a_keyword")
code = "an_assignment" if ready else "an_alternative"
def move(session, state, code, message): ...
class Outcome:
    state: str
    code: str
class Failure(Exception):
    def __init__(self, status, code): ...
move(session, state, "a_positional", "message")
Outcome(state, "a_field")
Failure(500, "an_argument")
def status_code(): return "a_returned"
SOME_CODES = {"Graph": "a_mapped"}
"""
    tree = ast.parse(source)
    found = {code for code, _ in codes_in(tree, code_positions([tree]))}
    assert found == {
        "a_keyword",
        "an_assignment",
        "an_alternative",
        "a_positional",
        "a_field",
        "an_argument",
        "a_returned",
        "a_mapped",
    }


def test_every_code_has_a_meaning() -> None:
    for registry in (API_ERROR_CODES, JOB_CODES, MAILBOX_REASONS, INTERNAL_CODES):
        for code, entry in registry.items():
            assert entry.meaning, code
            assert code.isascii() and code == code.lower(), code


def test_internal_codes_are_never_answered() -> None:
    assert not set(INTERNAL_CODES) & {*API_ERROR_CODES, *JOB_CODES, *MAILBOX_REASONS}


@pytest.mark.parametrize(
    ("schema", "registry"),
    [("ErrorCode", API_ERROR_CODES), ("JobCode", JOB_CODES), ("MailboxReason", MAILBOX_REASONS)],
)
def test_the_document_lists_each_registry_exactly_with_meaning_and_retry(
    schema: str, registry: Mapping[str, CodeMeaning]
) -> None:
    documented = SCHEMAS[schema]
    assert documented["enum"] == list(registry)
    for code, entry in registry.items():
        retry = "yes" if entry.retryable else "no"
        assert f"| `{code}` | {entry.meaning} | {retry} |" in documented["description"]


def test_each_code_field_of_an_answer_uses_its_enumeration_left_open() -> None:
    """The enum types the known codes; a plain string admits codes added later, so that a
    generated client (an open enum: ``ErrorCode | str``) does not break on them."""
    error = SCHEMAS["Error"]["properties"]["error"]["properties"]
    fields = {
        "ErrorCode": error["code"],
        "JobCode": SCHEMAS["JobError"]["properties"]["code"],
        "MailboxReason": SCHEMAS["Mailbox"]["properties"]["state_reason"],
    }
    fields_of_events = SCHEMAS["JobEvent"]["properties"]["code"]
    for name, field in [*fields.items(), ("JobCode", fields_of_events)]:
        reference, later = field["anyOf"][:2]
        assert reference == {"$ref": f"#/components/schemas/{name}"}
        assert later["type"] == "string" and "enum" not in later


def test_every_x_error_code_of_the_document_is_an_api_error_code() -> None:
    def walk(node: object) -> Iterator[str]:
        if isinstance(node, dict):
            if "x-error-code" in node:
                yield node["x-error-code"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    codes = set(walk(DOCUMENT))
    assert "invalid_limits" in codes
    assert codes <= set(API_ERROR_CODES)
