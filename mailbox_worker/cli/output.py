"""How operator commands answer: a tab-separated table under a header, or JSON (``--json``),
and the exit statuses every command keeps.

Exit statuses: ``OK`` (0) done; ``REFUSED`` (1) no such object, or the object is not in a
state the command applies to; ``USAGE`` (2) a wrong argument or setting.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

OK = 0
REFUSED = 1
USAGE = 2


def emit_rows(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], as_json: bool) -> None:
    """``rows`` as a JSON array, or as a table of ``columns`` (``-`` for a missing value)."""
    if as_json:
        emit_json(list(rows))
        return
    print("\t".join(column.upper() for column in columns))
    for row in rows:
        print("\t".join(_cell(row.get(column)) for column in columns))


def emit_json(document: Any) -> None:
    print(json.dumps(document, indent=2, sort_keys=True, default=str))


def refuse(message: str, status: int = REFUSED) -> int:
    """Say why on standard error and return ``status``."""
    print(f"mailbox-worker: {message}", file=sys.stderr)
    return status


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)
