"""A real PgBouncer (Debian's ``pgbouncer``; ``.ci/run`` installs it) in transaction mode in
front of the test PostgreSQL server, on a free port, for the tests that run through one."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import REQUIRE_POSTGRES
from tests.ports import free_port

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


@contextlib.contextmanager
def running_pgbouncer(server_connections: int, max_client_connections: int = 100) -> Iterator[int]:
    """PgBouncer with ``pool_mode = transaction`` and ``default_pool_size =
    server_connections`` for the block; yields its port. Skips (fails when PostgreSQL is
    required) if PgBouncer is not installed."""
    if not os.path.exists(PGBOUNCER):
        reason = "pgbouncer is not installed (apt-get install pgbouncer; .ci/run does)"
        if REQUIRE_POSTGRES:
            pytest.fail(reason)
        pytest.skip(reason)
    port = free_port()
    # PgBouncer refuses to run as root, so it runs as postgres, which cannot enter pytest's
    # private temporary folders: its files live in a folder of its own under /tmp.
    folder = Path(tempfile.mkdtemp(prefix="mw-pgbouncer-"))
    (folder / "users.txt").write_text('"postgres" ""\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        "* = host=127.0.0.1 port=5432\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\n"
        f"pool_mode = transaction\ndefault_pool_size = {server_connections}\n"
        f"max_client_conn = {max_client_connections}\nserver_reset_query =\n"
        "ignore_startup_parameters = extra_float_digits\nadmin_users = postgres\n"
    )
    for path in (folder, *folder.iterdir()):
        shutil.chown(path, "postgres")
    log = (folder / "pgbouncer.log").open("wb")
    process = subprocess.Popen(
        [PGBOUNCER, "-u", "postgres", str(folder / "pgbouncer.ini")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"pgbouncer exited: {(folder / 'pgbouncer.log').read_text()}")
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def through(url: str, port: int) -> str:
    """``url`` with its port replaced by ``port`` (PgBouncer's)."""
    return make_url(url).set(port=port).render_as_string(hide_password=False)


def stats(port: int, database: str) -> dict[str, int]:
    """PgBouncer's ``SHOW STATS`` row for ``database`` (totals since start: ``total_xact_count``,
    ``total_wait_time`` in µs, …), read with ``psql`` through the admin console (it speaks
    only the simple query protocol); empty when ``psql`` is not installed."""
    psql = shutil.which("psql")
    if psql is None:
        return {}
    console = ["-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "pgbouncer"]
    done = subprocess.run(
        [psql, *console, "--csv", "-c", "SHOW STATS"],
        capture_output=True,
        check=True,
        timeout=10,
        text=True,
    )
    for row in csv.DictReader(io.StringIO(done.stdout)):
        if row["database"] == database:
            return {name: int(value) for name, value in row.items() if value.isdigit()}
    return {}
