"""The sandbox's CPU per message: Graph ``sendMail`` of a 100 KB PDF invoice as base64 MIME, the
way the daemon posts it (one keep-alive connection per sender), read from the sandbox process's
own CPU time (/proc). The reference is the 2.4-2.8 ms per message measured before issue 9.

    .venv/bin/python bench/sandbox_cost.py [--messages 2000] [--senders 8] [--profile FILE]

Prints figures; never passes or fails on time. ``--profile`` runs the sandbox under cProfile
and writes its statistics to FILE (read them with ``python -m pstats FILE``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import time
from email.message import EmailMessage
from pathlib import Path

import aiohttp
from _daemon import (
    cpu_seconds,
    mailbox_address,
    pdf_bytes,
    start_sandbox,
    work_directory,
)

REFERENCE_MS = 2.6  # the middle of 2.4-2.8 ms, issue 9
MAILBOXES = 20


def mime_upload(sender: str, pdf: bytes, number: int) -> bytes:
    """The base64 MIME body of one ``sendMail`` call."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "ap@fabrikam.example"
    message["Subject"] = f"Invoice INV-{number:06d}"
    message["Message-ID"] = f"<bench-{number}@mailbox-worker.invalid>"
    message.set_content("Please find the invoice attached.")
    message.add_attachment(pdf, maintype="application", subtype="pdf", filename="invoice.pdf")
    return base64.b64encode(message.as_bytes())


async def measure(messages: int, senders: int, profile: Path | None) -> dict[str, float]:
    pdf = pdf_bytes(100 * 1024)
    with work_directory() as work:
        sandbox = start_sandbox(work / "sandbox", MAILBOXES, tokens=True, profile=profile)
        try:
            addresses = [mailbox_address(n % MAILBOXES) for n in range(messages)]
            bodies = [(each, mime_upload(each, pdf, n)) for n, each in enumerate(addresses)]
            pending = iter(bodies)
            refused = 0

            async def sender() -> None:
                nonlocal refused
                connector = aiohttp.TCPConnector(limit=1, ssl=sandbox.ssl_context())
                async with aiohttp.ClientSession(connector=connector) as http:
                    for address, body in pending:
                        headers = {
                            "Authorization": f"Bearer {sandbox.tokens[address]}",
                            "Content-Type": "text/plain",
                        }
                        url = f"{sandbox.base_url}/v1.0/me/sendMail"
                        async with http.post(url, data=body, headers=headers) as answer:
                            await answer.read()
                            refused += answer.status != 202

            before = cpu_seconds(sandbox.pid)
            started = time.perf_counter()
            await asyncio.gather(*(sender() for _ in range(senders)))
            seconds = time.perf_counter() - started
            used = cpu_seconds(sandbox.pid) - before
        finally:
            sandbox.stop()
    return {
        "cpu_ms_per_message": 1000 * used / messages,
        "messages_per_second": messages / seconds,
        "refused": refused,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--profile", type=Path)
    arguments = parser.parse_args()
    figures = asyncio.run(measure(arguments.messages, arguments.senders, arguments.profile))
    print(
        f"sandbox sendMail, 100 KB PDF, {arguments.messages} messages, "
        f"{arguments.senders} keep-alive senders: "
        f"{figures['cpu_ms_per_message']:.2f} ms CPU/message "
        f"({figures['cpu_ms_per_message'] / REFERENCE_MS:.2f} x the {REFERENCE_MS} ms reference), "
        f"{figures['messages_per_second']:.0f} messages/s, {figures['refused']:.0f} refused"
    )


if __name__ == "__main__":
    main()
