"""Key times in the writable stores: recorded from the injected clock, optional in old stores."""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from keyrings.alt.file import PlaintextKeyring

from mailbox_worker.errors import ConfigError, KeyUnavailable
from mailbox_worker.tokens.keys.env_source import EnvKeySource
from mailbox_worker.tokens.keys.file_source import FileKeySource
from mailbox_worker.tokens.keys.keyring_source import KeyringKeySource
from mailbox_worker.tokens.keys.port import KeyInfo
from mailbox_worker.tokens.keys.times import KeyTimes, date_in_key_id

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MATERIAL = base64.b64encode(bytes(range(32))).decode()
OTHER = base64.b64encode(bytes(range(32, 64))).decode()


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def test_a_dated_key_id_gives_its_date_and_others_give_none() -> None:
    assert date_in_key_id("kek-20250102-0a0b0c0d") == datetime(2025, 1, 2, tzinfo=UTC)
    assert date_in_key_id("kek-20251399-0a0b0c0d") is None
    assert date_in_key_id("prod-key-1") is None


def test_filling_unknown_times_is_conservative() -> None:
    now = START
    assert KeyTimes().filled("kek-20250102-0a0b0c0d", active=True, now=now) == KeyTimes(
        datetime(2025, 1, 2, tzinfo=UTC), None
    )
    assert KeyTimes().filled("legacy", active=False, now=now) == KeyTimes(now, now)
    known = KeyTimes(START - timedelta(days=9), START - timedelta(days=2))
    assert known.filled("legacy", active=False, now=now) == known


def test_file_source_records_creation_and_supersession(tmp_path: Path) -> None:
    clock = Clock()
    source = FileKeySource(tmp_path / "keys.json", create_if_missing=True, clock=clock)
    first = source.active_key()
    clock.now = START + timedelta(days=30)
    second = source.add_key()
    assert second.key_id.startswith("kek-20250331-")
    reopened = FileKeySource(tmp_path / "keys.json")
    assert reopened.key_infos() == [
        KeyInfo(first.key_id, False, KeyTimes(START, START + timedelta(days=30))),
        KeyInfo(second.key_id, True, KeyTimes(START + timedelta(days=30), None)),
    ]
    reopened.retire(first.key_id)
    document = json.loads((tmp_path / "keys.json").read_text())
    assert list(document["times"]) == [second.key_id]


def test_a_key_file_without_times_still_works_and_gets_them_stamped(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(
        json.dumps(
            {
                "active": "kek-20250102-0a0b0c0d",
                "keys": {"legacy": OTHER, "kek-20250102-0a0b0c0d": MATERIAL},
            }
        )
    )
    path.chmod(0o600)
    source = FileKeySource(path, clock=Clock())
    assert source.active_key().key_id == "kek-20250102-0a0b0c0d"
    assert [info.times for info in source.key_infos()] == [KeyTimes(), KeyTimes()]
    assert source.stamp_missing_times() == ["legacy", "kek-20250102-0a0b0c0d"]
    assert source.stamp_missing_times() == []
    assert FileKeySource(path).key_infos() == [
        KeyInfo("legacy", False, KeyTimes(START, START)),
        KeyInfo("kek-20250102-0a0b0c0d", True, KeyTimes(datetime(2025, 1, 2, tzinfo=UTC))),
    ]


@pytest.mark.parametrize(
    "times", [[], {"legacy": "yesterday"}, {"legacy": {"created": "2025-01-01T00:00:00"}}]
)
def test_a_key_file_with_malformed_times_is_refused_without_echoing_keys(
    tmp_path: Path, times: object
) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"active": "legacy", "keys": {"legacy": MATERIAL}, "times": times}))
    path.chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        FileKeySource(path).active_key()
    assert caught.value.setting == "keys.file"
    assert MATERIAL not in str(caught.value)


def test_keyring_source_reads_an_old_index_and_records_times_in_it(tmp_path: Path) -> None:
    backend = PlaintextKeyring()
    backend.file_path = str(tmp_path / "keyring.cfg")
    backend.set_password("svc", "index", json.dumps({"active": "legacy", "keys": ["legacy"]}))
    backend.set_password("svc", "key:legacy", MATERIAL)
    clock = Clock()
    source = KeyringKeySource("svc", backend=backend, clock=clock)
    assert source.key_infos() == [KeyInfo("legacy", True, KeyTimes())]
    assert source.stamp_missing_times() == ["legacy"]
    clock.now = START + timedelta(days=1)
    new = source.add_key()
    index = json.loads(backend.get_password("svc", "index"))
    assert index["times"] == {
        "legacy": {"created": START.isoformat(), "superseded": clock.now.isoformat()},
        new.key_id: {"created": clock.now.isoformat()},
    }
    assert KeyringKeySource("svc", backend=backend).key_infos()[1].times == KeyTimes(clock.now)


def test_keyring_source_refuses_malformed_times(tmp_path: Path) -> None:
    backend = PlaintextKeyring()
    backend.file_path = str(tmp_path / "keyring.cfg")
    index = {"active": "legacy", "keys": ["legacy"], "times": {"legacy": {"created": 5}}}
    backend.set_password("svc", "index", json.dumps(index))
    backend.set_password("svc", "key:legacy", MATERIAL)
    with pytest.raises(KeyUnavailable, match="malformed"):
        KeyringKeySource("svc", backend=backend).key_infos()


def test_env_source_is_read_only_and_knows_no_times() -> None:
    source = EnvKeySource(f"k2:{MATERIAL},k1:{OTHER}")
    assert source.read_only
    assert source.key_infos() == [KeyInfo("k2", True, KeyTimes()), KeyInfo("k1", False, KeyTimes())]
    assert source.stamp_missing_times() == []


ADD_KEYS = """
import sys
from pathlib import Path
from mailbox_worker.tokens.keys.file_source import FileKeySource
source = FileKeySource(Path(sys.argv[1]))
print(" ".join(source.add_key().key_id for _ in range(10)))
"""


def test_processes_adding_keys_to_one_file_lose_none(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    FileKeySource(path, create_if_missing=True).active_key()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", ADD_KEYS, str(path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    added = set()
    for process in processes:
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        added.update(output.split())
    assert len(added) == 40
    assert added <= set(FileKeySource(path).key_ids())


def as_unprivileged_user(check: Callable[[], bool]) -> bool:
    """``check()`` in a forked copy of this process that has given up root for the user
    ``nobody``, as the daemon runs in its image (not root): root writes anywhere, so a
    directory it cannot write does not exist for it. Unprivileged already: ``check()``."""
    if os.geteuid() != 0:
        return check()
    nobody = pwd.getpwnam("nobody")
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe, then exits
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            os.write(write, b"1" if check() else b"0")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(child, 0)
    assert answer in (b"0", b"1"), "the unprivileged check did not answer"
    return answer == b"1"


def test_a_key_file_in_a_directory_we_cannot_write_is_read_only() -> None:
    # A folder of its own: pytest's are private to the user running it, which nobody may not
    # enter.
    folder = Path(tempfile.mkdtemp(prefix="mw-keys-"))
    folder.chmod(0o755)
    path = folder / "mounted" / "keys.json"
    try:
        source = FileKeySource(path, create_if_missing=True)
        source.active_key()
        assert not source.read_only
        path.parent.chmod(0o555)  # a read-only mount, as far as the daemon's user can tell
        assert as_unprivileged_user(lambda: FileKeySource(path).read_only)
        # and where that user may write, the same file is not
        writable = folder / "writable" / "keys.json"
        FileKeySource(writable, create_if_missing=True).active_key()
        writable.parent.chmod(0o777)
        assert not as_unprivileged_user(lambda: FileKeySource(writable).read_only)
    finally:
        path.parent.chmod(0o700)
        shutil.rmtree(folder)
