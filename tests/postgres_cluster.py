"""A throwaway PostgreSQL cluster of the test's own, which the test may restart or stop.

The machine's server (``MAILBOX_WORKER_TEST_POSTGRES_URL``) is shared and never restarted; a
test that must see PostgreSQL go away and come back starts its own with the installed binaries
(``/usr/lib/postgresql/<version>/bin``: ``initdb``, ``pg_ctl``) in a ``mkdtemp`` folder owned by
``postgres`` (PostgreSQL refuses to run as root; the tests run as root, so the binaries run
through ``runuser -u postgres --`` when needed), on a free port, with ``fsync`` off. It trusts
local connections; the database ``postgres`` exists, user ``postgres``.

Missing binaries skip the test visibly, or fail it when ``MAILBOX_WORKER_TEST_REQUIRE_POSTGRES=1``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_POSTGRES
from tests.ports import free_port

START_TIMEOUT = 60.0


def server_binaries() -> Path | None:
    """The newest installed PostgreSQL server's ``bin`` folder, if any."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda path: int(Path(path).parent.parent.name.split(".")[0]),
    )
    return Path(found[-1]).parent if found else None


class PostgresCluster:
    """One cluster in ``folder`` listening on 127.0.0.1:``port`` (after ``start``)."""

    def __init__(self, binaries: Path, folder: Path, port: int) -> None:
        self.binaries = binaries
        self.folder = folder
        self.port = port
        self.restarts = 0

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of ``database`` on this cluster."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.binaries / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, check=False, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(
                f"{program} failed ({done.returncode}): {done.stderr.decode(errors='replace')}"
                f"\n{self.log.read_text(errors='replace') if self.log.exists() else ''}"
            )

    def init(self) -> None:
        """Create the cluster's files (trust authentication, user postgres)."""
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories="
            f"{self.folder} -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect everyone; ``immediate``: as after a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast", down_for: float = 0.0) -> None:
        """Stop the server, stay down ``down_for`` seconds, start it again."""
        self.stop(mode)
        time.sleep(down_for)
        self.start()
        self.restarts += 1


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A started cluster of the test's own; stopped and deleted afterwards."""
    binaries = server_binaries()
    if binaries is None or not (binaries / "initdb").exists():
        reason = (
            "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin; apt-get install postgresql)"
        )
        if REQUIRE_POSTGRES:
            pytest.fail(reason)
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="mw-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    cluster = PostgresCluster(binaries, folder, free_port())
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):  # not running
            cluster.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)
