"""What the whole sandbox shares: its certificates and the ``serve`` entry point."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mailbox_worker.sandbox import serve
from mailbox_worker.sandbox.ca import ensure_certificates


async def test_certificates_are_reused(tmp_path: Path) -> None:
    first = ensure_certificates(tmp_path)
    ca_bytes = first.ca_certificate.read_bytes()
    second = ensure_certificates(tmp_path)
    assert second.ca_certificate.read_bytes() == ca_bytes
    assert second.server_certificate.read_bytes() == first.server_certificate.read_bytes()


async def test_serve_prints_its_address_and_stops_when_cancelled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = asyncio.create_task(serve("127.0.0.1", 0, tmp_path))
    output = ""
    for _ in range(100):
        await asyncio.sleep(0.05)
        output += capsys.readouterr().out
        if "CA certificate" in output:
            break
    assert "https://127.0.0.1:" in output
    assert str(tmp_path / "sandbox-ca.pem") in output
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
