"""The stable codes: one registry in ``mailbox_worker/errors.py``, the same sets as enums in
the API document, and no code raised in the package that the registry does not list."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator, Mapping
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

# Calls that take a code positionally: callee name → the argument's index.
POSITIONAL_CODE = {
    "Outcome": 1,
    "Settlement": 2,
    "move_each": 3,
    "error_response": 1,
    "raw_answer": 2,
    "ProtocolFailure": 1,
    "_remember_failure": 1,
    "set_state": 2,
    "cancel_pending_for_mailbox": 1,
    "hold_for_mailbox": 1,
    "require_consent_again": 1,
}
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


def codes_in(tree: ast.AST) -> Iterator[tuple[str, int]]:
    """Every code the module states: ``code=...`` arguments and ``code = ...`` assignments,
    codes passed positionally (``POSITIONAL_CODE``), strings returned by a ``*_code``
    function and the values of a ``*_CODES`` mapping."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "code":
                    yield from ((code, node.lineno) for code in _strings(keyword.value))
            index = POSITIONAL_CODE.get(_callee(node))
            if index is not None and len(node.args) > index:
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
    found: set[tuple[str, str]] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "sandbox":  # the fake providers speak the providers' codes
            continue
        for code, line in codes_in(ast.parse(path.read_text(), str(path))):
            found.add((code, f"{relative}:{line}"))
    return found


def test_every_code_the_package_states_is_in_the_registry() -> None:
    stated = stated_codes()
    assert len({code for code, _ in stated}) > 60  # the scan finds them (a scan that broke)
    missing = sorted(f"{code} ({where})" for code, where in stated if code not in EVERY_CODE)
    assert missing == []


def test_the_scan_finds_a_code_given_in_each_form() -> None:
    source = """
raise Conflict("x", code="a_keyword")
code = "an_assignment" if ready else "an_alternative"
Outcome(state, "a_positional", "message")
def status_code(): return "a_returned"
SOME_CODES = {"Graph": "a_mapped"}
"""
    found = {code for code, _ in codes_in(ast.parse(source))}
    assert found == {
        "a_keyword",
        "an_assignment",
        "an_alternative",
        "a_positional",
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


def test_each_code_field_of_an_answer_uses_its_enumeration() -> None:
    error = SCHEMAS["Error"]["properties"]["error"]["properties"]
    assert error["code"] == {"$ref": "#/components/schemas/ErrorCode"}
    assert SCHEMAS["JobError"]["properties"]["code"] == {"$ref": "#/components/schemas/JobCode"}
    assert {"$ref": "#/components/schemas/JobCode"} in SCHEMAS["JobEvent"]["properties"]["code"][
        "anyOf"
    ]
    assert {"$ref": "#/components/schemas/MailboxReason"} in SCHEMAS["Mailbox"]["properties"][
        "state_reason"
    ]["anyOf"]


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
