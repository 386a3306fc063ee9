"""`mailbox-worker demo` on a fresh directory exits 0 having delivered every invoice once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_runs_to_completion(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOX_WORKER_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailbox_worker.cli",
            "demo",
            "--invoices",
            "5",
            "--data-dir",
            str(tmp_path),
        ],
        env=environment,
        capture_output=True,
        timeout=180,
        check=False,
    )
    output = done.stdout.decode()
    assert done.returncode == 0, output + done.stderr.decode()
    assert "all invoices delivered exactly once" in output
    assert output.count("equal") >= 5
    assert (tmp_path / "mailbox-worker.db").exists()
    assert oct((tmp_path / "keys.json").stat().st_mode & 0o777) == "0o600"
