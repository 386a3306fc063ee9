"""Key-encryption keys and their sources: file, environment and keyring (a real file backend)."""

from __future__ import annotations

import base64
import errno
import json
import re
import stat
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import keyring
import keyring.backends.fail
import keyring.backends.null
import pytest
from keyring.backend import KeyringBackend
from keyring.errors import KeyringLocked, NoKeyringError
from keyrings.alt.file import PlaintextKeyring

from mailbox_worker.errors import ConfigError, KeyUnavailable, VaultError
from mailbox_worker.tokens.envelope import new_data_key, unwrap_data_key, wrap_data_key
from mailbox_worker.tokens.keys.env_source import ENV_VAR, EnvKeySource
from mailbox_worker.tokens.keys.file_source import FileKeySource
from mailbox_worker.tokens.keys.keyring_source import KeyringKeySource
from mailbox_worker.tokens.keys.port import KeyEncryptionKey, KeySource, generate_key

KEY_ID_FORMAT = re.compile(r"kek-\d{8}-[0-9a-f]{8}")
MATERIAL_A = bytes(range(32))
MATERIAL_B = bytes(range(32, 64))
B64_A = base64.b64encode(MATERIAL_A).decode()
B64_B = base64.b64encode(MATERIAL_B).decode()
CREATED = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


# --- KeyEncryptionKey ---------------------------------------------------------------------


def test_key_repr_and_str_show_the_id_but_never_the_material() -> None:
    key = KeyEncryptionKey("kek-20250101-0a0b0c0d", MATERIAL_A)
    for text in (repr(key), str(key), f"{key}", repr([key])):
        assert "kek-20250101-0a0b0c0d" in text
        assert MATERIAL_A.hex() not in text
        assert B64_A not in text
        assert repr(MATERIAL_A) not in text
    assert repr(key) == "KeyEncryptionKey(key_id='kek-20250101-0a0b0c0d')"


@pytest.mark.parametrize("length", [0, 16, 31, 33])
def test_key_material_must_be_32_bytes(length: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        KeyEncryptionKey("kek-1", bytes(length))


@pytest.mark.parametrize("key_id", ["", "has space", "a:b", "a,b", "-leading", "x" * 65])
def test_key_id_must_be_a_plain_token(key_id: str) -> None:
    with pytest.raises(ValueError, match="key id"):
        KeyEncryptionKey(key_id, MATERIAL_A)


def test_generated_keys_are_random_and_named_by_date() -> None:
    first, second = generate_key(), generate_key()
    assert KEY_ID_FORMAT.fullmatch(first.key_id)
    assert first.key_id != second.key_id
    assert first.material != second.material
    assert len(first.material) == 32


# --- FileKeySource ------------------------------------------------------------------------


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "secrets" / "keys.json"


def write_key_file(path: Path, document: object, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    path.chmod(mode)


def test_file_source_without_a_file_fails_closed_and_says_how_to_fix(key_file: Path) -> None:
    source = FileKeySource(key_file)
    with pytest.raises(KeyUnavailable, match="mailbox-worker keys rotate"):
        source.active_key()
    with pytest.raises(KeyUnavailable):
        source.get("kek-1")
    assert source.key_ids() == []
    assert not key_file.exists()


def test_file_source_creates_a_0600_file_when_asked(key_file: Path) -> None:
    key = FileKeySource(key_file, create_if_missing=True, clock=lambda: CREATED).active_key()
    assert KEY_ID_FORMAT.fullmatch(key.key_id)
    assert key.key_id.startswith("kek-20250102-")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    document = json.loads(key_file.read_text())
    assert document == {
        "active": key.key_id,
        "keys": {key.key_id: base64.b64encode(key.material).decode()},
        "times": {key.key_id: {"created": "2025-01-02T03:04:05+00:00"}},
    }
    reopened = FileKeySource(key_file, create_if_missing=True)
    assert reopened.active_key() == key
    assert reopened.key_ids() == [key.key_id]


def test_file_source_rotation_keeps_old_keys_readable(key_file: Path) -> None:
    source = FileKeySource(key_file, create_if_missing=True)
    old = source.active_key()
    wrapped = wrap_data_key(old, data_key := new_data_key(), mailbox_id="mbx-1")
    new = source.add_key()
    assert new.key_id != old.key_id
    assert source.active_key() == new
    assert source.key_ids() == [old.key_id, new.key_id]
    assert unwrap_data_key(source.get(old.key_id), wrapped, mailbox_id="mbx-1") == data_key
    reopened = FileKeySource(key_file)
    assert reopened.active_key() == new
    assert reopened.get(old.key_id) == old
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # no temporary file left behind; the lock file is empty and stays
    assert sorted(p.name for p in key_file.parent.iterdir()) == ["keys.json", "keys.json.lock"]


def test_file_source_add_key_creates_the_first_key_without_create_if_missing(
    key_file: Path,
) -> None:
    source = FileKeySource(key_file)
    key = source.add_key()
    assert source.active_key() == key
    assert source.key_ids() == [key.key_id]


def test_file_source_retires_an_old_key(key_file: Path) -> None:
    source = FileKeySource(key_file, create_if_missing=True)
    old = source.active_key()
    new = source.add_key()
    source.retire(old.key_id)
    assert source.key_ids() == [new.key_id]
    with pytest.raises(KeyUnavailable, match=old.key_id):
        source.get(old.key_id)
    assert FileKeySource(key_file).key_ids() == [new.key_id]
    assert old.key_id not in key_file.read_text()


def test_file_source_refuses_to_retire_the_active_key(key_file: Path) -> None:
    source = FileKeySource(key_file, create_if_missing=True)
    active = source.active_key()
    with pytest.raises(VaultError, match=active.key_id) as caught:
        source.retire(active.key_id)
    assert caught.value.code == "key_active"
    assert source.get(active.key_id) == active


def test_file_source_retiring_an_unknown_key_names_it(key_file: Path) -> None:
    source = FileKeySource(key_file, create_if_missing=True)
    with pytest.raises(KeyUnavailable, match="kek-unknown"):
        source.retire("kek-unknown")


def test_file_source_sees_a_key_added_by_another_process(key_file: Path) -> None:
    daemon = FileKeySource(key_file, create_if_missing=True)
    old = daemon.active_key()
    new = FileKeySource(key_file).add_key()  # e.g. `mailbox-worker keys rotate`
    assert daemon.get(new.key_id) == new
    assert daemon.active_key() == new
    assert daemon.get(old.key_id) == old


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_file_source_refuses_a_file_others_can_access(key_file: Path, mode: int) -> None:
    write_key_file(key_file, {"active": "kek-a", "keys": {"kek-a": B64_A}}, mode)
    with pytest.raises(ConfigError, match="chmod 600") as caught:
        FileKeySource(key_file).active_key()
    assert caught.value.setting == "keys.file"
    assert f"{mode:o}" in str(caught.value)


def test_file_source_accepts_a_read_only_owner_file(key_file: Path) -> None:
    write_key_file(key_file, {"active": "kek-a", "keys": {"kek-a": B64_A}}, 0o400)
    assert FileKeySource(key_file).active_key() == KeyEncryptionKey("kek-a", MATERIAL_A)


@pytest.mark.parametrize(
    "content",
    [
        "not json " + B64_A,
        json.dumps(["kek-a", B64_A]),
        json.dumps({"active": "kek-a", "keys": {}}),
        json.dumps({"active": "kek-b", "keys": {"kek-a": B64_A}}),
        json.dumps({"active": "kek-a", "keys": {"kek-a": B64_A[:-4]}}),
        json.dumps({"active": "kek-a", "keys": {"kek-a": B64_A + "!"}}),
        json.dumps({"active": "kek-a", "keys": {"kek-a": 42}}),
        json.dumps({"active": "kek-a", "keys": {"bad id": B64_A}}),
    ],
    ids=["not-json", "not-object", "no-keys", "active-missing", "short", "bad-b64", "int", "id"],
)
def test_file_source_rejects_a_malformed_file_without_echoing_it(
    key_file: Path, content: str
) -> None:
    key_file.parent.mkdir(parents=True)
    key_file.write_text(content)
    key_file.chmod(0o600)
    with pytest.raises(ConfigError, match="malformed") as caught:
        FileKeySource(key_file).active_key()
    assert caught.value.setting == "keys.file"
    assert B64_A[:20] not in str(caught.value)


def test_file_source_serves_concurrent_readers_during_rotation(key_file: Path) -> None:
    source = FileKeySource(key_file, create_if_missing=True)
    first = source.active_key()
    failures: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(200):
                assert source.get(first.key_id) == first
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    readers = [threading.Thread(target=read) for _ in range(8)]
    for reader in readers:
        reader.start()
    added = [source.add_key() for _ in range(5)]
    for reader in readers:
        reader.join()
    assert failures == []
    assert source.key_ids() == [first.key_id, *(key.key_id for key in added)]
    assert all(source.get(key.key_id) == key for key in added)


# --- EnvKeySource -------------------------------------------------------------------------


def test_env_source_reads_keys_and_the_first_is_active() -> None:
    source = EnvKeySource(f" kek-a : {B64_A} , kek-b:{B64_B}")
    assert source.active_key() == KeyEncryptionKey("kek-a", MATERIAL_A)
    assert source.get("kek-b") == KeyEncryptionKey("kek-b", MATERIAL_B)
    assert source.key_ids() == ["kek-a", "kek-b"]


def test_env_source_fails_closed_on_an_unknown_key_id() -> None:
    source = EnvKeySource(f"kek-a:{B64_A}")
    with pytest.raises(KeyUnavailable, match="kek-gone"):
        source.get("kek-gone")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        B64_A,
        f"{B64_A}:kek-a",
        f"kek-a:{B64_A},",
        f"kek-a:{B64_A[:-4]}",
        f"kek-a:{B64_A}!",
        f"kek-a:{B64_A},kek-a:{B64_B}",
        f"kek a:{B64_A}",
    ],
    ids=["empty", "blank", "no-id", "reversed", "trailing", "short", "bad-b64", "dup", "bad-id"],
)
def test_env_source_rejects_a_malformed_value_without_echoing_it(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        EnvKeySource(value)
    assert caught.value.setting == ENV_VAR
    assert ENV_VAR in str(caught.value)
    assert B64_A[:20] not in str(caught.value)
    assert B64_B[:20] not in str(caught.value)
    assert caught.value.__cause__ is None


def test_env_source_is_read_only() -> None:
    source = EnvKeySource(f"kek-a:{B64_A},kek-b:{B64_B}")
    with pytest.raises(ConfigError, match="managed by the deployment") as caught:
        source.add_key()
    assert caught.value.setting == "keys.source"
    with pytest.raises(ConfigError, match="managed by the deployment"):
        source.retire("kek-b")
    assert source.key_ids() == ["kek-a", "kek-b"]


# --- KeyringKeySource ---------------------------------------------------------------------


@pytest.fixture
def file_keyring(tmp_path: Path) -> Iterator[PlaintextKeyring]:
    """A real keyring backend (keyrings.alt's plaintext file), installed process-wide."""
    previous = keyring.get_keyring()
    backend = PlaintextKeyring()
    backend.file_path = str(tmp_path / "keyring.cfg")
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture
def installed_backend() -> Iterator[None]:
    previous = keyring.get_keyring()
    yield
    keyring.set_keyring(previous)


def test_keyring_source_without_keys_fails_closed(file_keyring: PlaintextKeyring) -> None:
    source = KeyringKeySource("mailbox-worker-test")
    with pytest.raises(KeyUnavailable, match="mailbox-worker keys rotate"):
        source.active_key()
    assert source.key_ids() == []


def test_keyring_source_creates_a_key_and_finds_it_again(
    file_keyring: PlaintextKeyring,
) -> None:
    source = KeyringKeySource("mailbox-worker-test", create_if_missing=True, clock=lambda: CREATED)
    key = source.active_key()
    assert KEY_ID_FORMAT.fullmatch(key.key_id)
    index = json.loads(file_keyring.get_password("mailbox-worker-test", "index"))
    assert index == {
        "active": key.key_id,
        "keys": [key.key_id],
        "times": {key.key_id: {"created": "2025-01-02T03:04:05+00:00"}},
    }
    stored = file_keyring.get_password("mailbox-worker-test", f"key:{key.key_id}")
    assert base64.b64decode(stored) == key.material
    assert KeyringKeySource("mailbox-worker-test").active_key() == key


def test_keyring_source_rotates_and_retires(file_keyring: PlaintextKeyring) -> None:
    source = KeyringKeySource("mailbox-worker-test", create_if_missing=True)
    old = source.active_key()
    new = source.add_key()
    assert source.active_key() == new
    assert source.key_ids() == [old.key_id, new.key_id]
    reopened = KeyringKeySource("mailbox-worker-test")
    assert reopened.get(old.key_id) == old
    assert reopened.active_key() == new
    with pytest.raises(VaultError) as caught:
        reopened.retire(new.key_id)
    assert caught.value.code == "key_active"
    reopened.retire(old.key_id)
    assert reopened.key_ids() == [new.key_id]
    assert file_keyring.get_password("mailbox-worker-test", f"key:{old.key_id}") is None
    with pytest.raises(KeyUnavailable, match=old.key_id):
        KeyringKeySource("mailbox-worker-test").get(old.key_id)


def test_keyring_source_uses_an_explicit_backend(tmp_path: Path) -> None:
    backend = PlaintextKeyring()
    backend.file_path = str(tmp_path / "explicit.cfg")
    key = KeyringKeySource(create_if_missing=True, backend=backend).active_key()
    assert backend.get_password("mailbox-worker", f"key:{key.key_id}") is not None


def test_keyring_source_reports_a_key_whose_entry_is_missing(
    file_keyring: PlaintextKeyring,
) -> None:
    source = KeyringKeySource("mailbox-worker-test", create_if_missing=True)
    key = source.active_key()
    file_keyring.delete_password("mailbox-worker-test", f"key:{key.key_id}")
    with pytest.raises(KeyUnavailable, match="material is missing"):
        KeyringKeySource("mailbox-worker-test").active_key()


def test_keyring_source_rejects_a_malformed_index(file_keyring: PlaintextKeyring) -> None:
    file_keyring.set_password("mailbox-worker-test", "index", "{not json")
    with pytest.raises(KeyUnavailable, match="malformed"):
        KeyringKeySource("mailbox-worker-test").active_key()


@pytest.mark.parametrize(
    "backend", [keyring.backends.fail.Keyring(), keyring.backends.null.Keyring()]
)
def test_keyring_source_without_a_usable_backend_is_a_config_error(
    installed_backend: None, backend: KeyringBackend
) -> None:
    keyring.set_keyring(backend)
    source = KeyringKeySource(create_if_missing=True)
    for operation in (source.active_key, source.add_key, source.key_ids):
        with pytest.raises(ConfigError, match="keyring backend") as caught:
            operation()
        assert caught.value.setting == "keys.source"
        assert '"file"' in caught.value.message
        assert '"env"' in caught.value.message
        assert "\n" not in str(caught.value)


class RaisingKeyring(KeyringBackend):
    """A backend that fails every call with ``error`` (e.g. a desktop keyring still locked)."""

    priority = 1.0

    def __init__(self, error: Exception) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # keyring leaves it unannotated
        self.error = error

    def get_password(self, service: str, username: str) -> str | None:
        raise self.error

    def set_password(self, service: str, username: str, password: str) -> None:
        raise self.error

    def delete_password(self, service: str, username: str) -> None:
        raise self.error


def test_keyring_source_turns_backend_failures_into_key_unavailable() -> None:
    source = KeyringKeySource(backend=RaisingKeyring(KeyringLocked("collection is locked")))
    with pytest.raises(KeyUnavailable, match="KeyringLocked"):
        source.active_key()


def test_keyring_source_turns_no_keyring_error_into_a_config_error() -> None:
    source = KeyringKeySource(backend=RaisingKeyring(NoKeyringError("no backend")))
    with pytest.raises(ConfigError, match="install one") as caught:
        source.add_key()
    assert caught.value.setting == "keys.source"


# --- every source is a KeySource ----------------------------------------------------------


def test_every_source_satisfies_the_port(key_file: Path, file_keyring: PlaintextKeyring) -> None:
    sources: list[KeySource] = [
        FileKeySource(key_file, create_if_missing=True),
        KeyringKeySource("mailbox-worker-test", create_if_missing=True),
        EnvKeySource(f"kek-a:{B64_A}"),
    ]
    for source in sources:
        active = source.active_key()
        assert source.get(active.key_id) == active
        assert source.key_ids()[0] == active.key_id


def test_file_source_reports_a_write_failure_as_a_config_error(
    key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: object, **kwargs: object) -> tuple[int, str]:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkstemp", disk_full)
    with pytest.raises(ConfigError, match=r"cannot write .* No space left") as caught:
        FileKeySource(key_file, create_if_missing=True).active_key()
    assert caught.value.setting == "keys.file"


def test_file_source_reports_an_unreadable_path_as_a_config_error(key_file: Path) -> None:
    key_file.mkdir(parents=True, mode=0o700)
    with pytest.raises(ConfigError, match="cannot read") as caught:
        FileKeySource(key_file).active_key()
    assert caught.value.setting == "keys.file"
