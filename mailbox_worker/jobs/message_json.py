"""A message's JSON without ``json.dumps`` copying its attachments' base64.

An invoice's message is mostly its attachments' base64, and ``json.dumps`` copies a long
string character by character, checking each for an escape: about 20 µs for a 10 KB PDF,
0.16 ms per 100 KB. Base64 needs no escape in JSON, so the rest of the document is dumped with
a marker in each attachment's place and the base64 goes in beside it (``pieces``): the same
text, for the request's digest (``jobs/intake.py``) and for the payload the enqueue stores
(``jobs/store.py``; docs/performance.md "Sixth pass"). Content that would need an escape, or a
marker met elsewhere in the document, takes the whole dump.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MARKER = "\x00attachment:"
"""Stands for an attachment's content in the dump; JSON writes its NUL as ``\\u0000``."""
_MARKER_JSON = '"\\u0000attachment:'
"""A marker as it starts in the dump, its opening quote included."""
_JSON_ESCAPED = bytes([*range(0x20), ord('"'), ord("\\")])
"""The bytes ``json.dumps`` writes otherwise than as themselves in an ASCII string."""


def json_plain(text: str) -> bool:
    """Whether ``json.dumps(text)`` is ``text`` between quotes (ASCII, nothing to escape)."""
    if not text.isascii():
        return False
    raw = text.encode("ascii")
    return len(raw.translate(None, _JSON_ESCAPED)) == len(raw)


@dataclass(frozen=True)
class Marked:
    """A message with each attachment's ``content_base64`` replaced by a marker, and the
    contents, in order (``mark``)."""

    message: dict[str, Any]
    contents: list[str]


def mark(message: Any, *, base64_checked: bool = False) -> Marked | None:
    """``message`` marked, or None when it has no attachment content to replace, or one that
    is not a string JSON writes as it is (checked here once, for every dump made from it).

    ``base64_checked``: every ``content_base64`` string of the message matched the API
    document's base64 pattern already (a validated ``Submission``; ``api/document.py``,
    ``is_standard_base64``). That pattern admits only the base64 alphabet and ``=``, which
    JSON writes as they are, so the contents are not read again (``json_plain``: about
    70 µs per 100 KB attachment; docs/performance.md "Eleventh pass")."""
    if not isinstance(message, dict):
        return None
    attachments = message.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return None
    contents = [
        attachment["content_base64"]
        for attachment in attachments
        if isinstance(attachment, dict) and isinstance(attachment.get("content_base64"), str)
    ]
    if len(contents) != len(attachments):
        return None
    if not base64_checked and not all(map(json_plain, contents)):
        return None
    marked = [
        {**attachment, "content_base64": f"{MARKER}{index}"}
        for index, attachment in enumerate(attachments)
    ]
    return Marked({**message, "attachments": marked}, contents)


def pieces(
    document: Any,
    dump: Callable[[Any], str],
    marked: Marked | None,
    with_marked: Callable[[Any, dict[str, Any]], Any] = lambda document, message: message,
) -> list[str]:
    """``dump(document)`` in pieces whose concatenation is exactly that text, the attachments'
    base64 as pieces of their own, not copied through ``dump``.

    ``marked`` is ``mark`` of the document's message, and ``with_marked(document, message)``
    the document with the marked message in its place (by default the document is the
    message)."""
    if marked is None:
        return [dump(document)]
    contents = marked.contents
    parts = dump(with_marked(document, marked.message)).split(_MARKER_JSON)
    if len(parts) != len(contents) + 1:  # a marker in the document itself
        return [dump(document)]
    spliced = [parts[0]]
    for index, (content, part) in enumerate(zip(contents, parts[1:], strict=True)):
        prefix = f'{index}"'
        if not part.startswith(prefix):
            return [dump(document)]
        spliced += [f'"{content}"', part[len(prefix) :]]
    return spliced


def dumps_message(message: Any, marked: Marked | None = None) -> str:
    """``json.dumps(message)``, exactly, the attachments' base64 spliced in (``marked``:
    ``mark(message)`` when the caller has it already)."""
    return "".join(pieces(message, json.dumps, marked if marked is not None else mark(message)))


__all__ = ["MARKER", "Marked", "dumps_message", "json_plain", "mark", "pieces"]
