"""docs/webhooks.md stays true: its worked signature is the daemon's, and its standard-library
verification snippet accepts what the daemon signs and refuses what it must."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from mailbox_worker.events.signing import TOLERANCE, sign

PAGE = (Path(__file__).parents[2] / "docs" / "webhooks.md").read_text()
SECRET = "whsec_example"  # the secret the page's worked example is signed under


def fenced_blocks() -> list[tuple[str, str]]:
    """``(language, text)`` of each fenced block of the page, in order."""
    blocks: list[tuple[str, str]] = []
    language: str | None = None
    lines: list[str] = []
    for line in PAGE.splitlines(keepends=True):
        if line.startswith("```"):
            if language is None:
                language, lines = line[3:].strip(), []
            else:
                blocks.append((language, "".join(lines)))
                language = None
        elif language is not None:
            lines.append(line)
    return blocks


def block(language: str, starting: str) -> str:
    for found_language, text in fenced_blocks():
        if found_language == language and text.startswith(starting):
            return text
    raise AssertionError(f"no {language} block starting {starting!r}")


BODY = block("json", '{"id":"evt_').strip().encode()
HEADER = (
    block("", "X-Mailbox-Worker-Signature: ").strip().removeprefix("X-Mailbox-Worker-Signature: ")
)
SIGNED_AT = int(HEADER.split(",")[0].removeprefix("t="))


def snippet() -> Callable[..., bool]:
    namespace: dict[str, Any] = {}
    exec(compile(block("python", "import hashlib"), "docs/webhooks.md", "exec"), namespace)  # noqa: S102
    return cast(Callable[..., bool], namespace["verify"])


def test_the_worked_example_is_what_the_daemon_signs() -> None:
    assert sign(BODY, SIGNED_AT, SECRET) == HEADER


def test_the_snippet_accepts_a_fresh_daemon_signature() -> None:
    verify = snippet()
    assert verify(HEADER, BODY, SECRET, now=SIGNED_AT)
    assert verify(sign(BODY, SIGNED_AT, "old", SECRET), BODY, SECRET, now=SIGNED_AT + 10)


@pytest.mark.parametrize(
    ("header", "body", "secret", "now"),
    [
        (HEADER, BODY.replace(b"sent", b"failed"), SECRET, SIGNED_AT),  # tampered body
        (HEADER, BODY, "another", SIGNED_AT),  # wrong secret
        (HEADER, BODY, SECRET, SIGNED_AT + TOLERANCE + 1),  # replayed later
        (HEADER, BODY, SECRET, SIGNED_AT - TOLERANCE - 1),  # from the future
        ("sha256=" + HEADER.rsplit("=", 1)[1], BODY, SECRET, SIGNED_AT),  # the v0.1 form
        (HEADER.replace(f"t={SIGNED_AT}", "t=x"), BODY, SECRET, SIGNED_AT),  # malformed
    ],
)
def test_the_snippet_refuses(header: str, body: bytes, secret: str, now: float) -> None:
    assert not snippet()(header, body, secret, now=now)
