"""CPU per job of building the MIME message (``build_message``, in the worker) and of bounding
its size (``message_size_bound``, at intake), against the previous builder, side by side in
one process. The reference is the builder before issue 9's MIME work, kept in
``tests/unit/mime_reference.py`` (or ``--reference FILE``).

    .venv/bin/python bench/mime_build.py [--repeat 15] [--reference FILE]

Three messages: the invoice of the end-to-end benchmark made typical (2 To, 1 Cc, a subject
with non-ASCII characters, text and HTML bodies, a 100 KB PDF), a text-only message without
attachment, and a 10 MB attachment. Each figure is the median over ``--repeat`` timed loops
of the µs of this process's CPU time per call (``timeit`` with ``time.process_time``, so
that other processes on a busy machine count less; each loop about 0.1 s). Prints figures;
never passes or fails on time.
"""

from __future__ import annotations

import argparse
import base64
import functools
import importlib.util
import os
import statistics
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from mailbox_worker.jobs import mime

ROOT = Path(__file__).resolve().parent.parent
MESSAGE_ID = "<job_0123456789abcdef0123456789abcdef@contoso.example>"
SENDER = "billing@contoso.example"


def reference(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("mime_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def attachment(size: int, filename: str) -> dict[str, str]:
    content = b"%PDF-1.4\n" + os.urandom(max(0, size - 9))
    return {
        "filename": filename,
        "content_type": "application/pdf",
        "content_base64": base64.b64encode(content).decode(),
    }


def messages() -> dict[str, dict[str, Any]]:
    invoice = {
        "from": {"address": SENDER, "name": "Contoso Billing"},
        "to": [
            {"address": "ap@fabrikam.example", "name": "Fabrikam, Accounts Payable"},
            {"address": "jorg.muller@fabrikam.example", "name": "Jörg Müller"},
        ],
        "cc": [{"address": "cfo@fabrikam.example"}],
        "subject": "Facture INV-2026-000123 — 1 234,56 €",
        "text": "Bonjour,\n\nVeuillez trouver ci-joint la facture INV-2026-000123.\n\nContoso\n",
        "html": "<p>Bonjour,</p><p>Veuillez trouver ci-joint la facture "
        "<b>INV-2026-000123</b>.</p><p>Contoso</p>",
        "attachments": [attachment(100 * 1024, "INV-2026-000123.pdf")],
    }
    text_only = {
        "to": [{"address": "ap@fabrikam.example"}],
        "subject": "Invoice INV-2026-000123",
        "text": "Please find the invoice at https://billing.contoso.example/inv/123.\n",
    }
    large = dict(invoice, attachments=[attachment(10 * 1024 * 1024, "archive.pdf")])
    return {"invoice, 100 KB PDF": invoice, "text only": text_only, "10 MB attachment": large}


def per_call_us(function: Callable[[], object], repeat: int) -> float:
    """The median over ``repeat`` loops of µs per call, each loop at least 0.1 s."""
    timer = timeit.Timer(function, timer=time.process_time)  # CPU time: others' load aside
    number, _ = timer.autorange()
    number = max(1, number // 2)  # autorange aims at 0.2 s; half keeps runs short
    return statistics.median(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed loops per figure")
    parser.add_argument(
        "--reference",
        type=Path,
        default=ROOT / "tests" / "unit" / "mime_reference.py",
        help="the previous builder's module (build_message, message_size_bound)",
    )
    options = parser.parse_args()
    old = reference(options.reference)
    rows: list[tuple[str, str, float, float]] = []
    for label, payload in messages().items():
        sizes = [
            len(base64.b64decode(each["content_base64"]))
            for each in payload.get("attachments") or ()
        ]
        for function in ("build_message", "message_size_bound"):
            figures = []
            for module in (old, mime):
                keywords: dict[str, Any] = {"message_id": MESSAGE_ID, "sender": SENDER}
                if function == "message_size_bound":
                    keywords["decoded_sizes"] = sizes
                call = functools.partial(getattr(module, function), payload, **keywords)
                figures.append(per_call_us(call, options.repeat))
            before, after = figures
            rows.append((label, function, before, after))
    built = {
        label: len(mime.build_message(p, message_id=MESSAGE_ID, sender=SENDER))
        for label, p in messages().items()
    }
    print(f"medians of {options.repeat} loops, CPU µs per call (reference: {options.reference})")
    print(f"{'message':22} {'function':20} {'before':>12} {'after':>12} {'after/before':>13}")
    for label, function, before, after in rows:
        print(f"{label:22} {function:20} {before:12,.0f} {after:12,.0f} {after / before:13.3f}")
    for label, size in built.items():
        print(f"{label}: {size:,} bytes built")


if __name__ == "__main__":
    main()
