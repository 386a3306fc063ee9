"""Key-encryption keys (KEKs) and the sources they come from.

A KEK wraps each mailbox's data key (see :mod:`mailbox_worker.tokens.envelope`); it never sits in
the database. :class:`KeySource` is the port, with three adapters:

    KeyringKeySource   the operating system's keyring (the default)
    FileKeySource      a JSON file of mode 0600 (a container's mounted secret, the demo)
    EnvKeySource       the ``MAILBOX_WORKER_KEYS`` environment variable, read-only

Rotation: ``add_key()`` stores a new key and makes it the active one (the key new wraps use);
older keys stay readable, so data keys wrapped under them still unwrap. Once every record has been
re-wrapped, ``retire(old_id)`` removes the old key. Retiring a key that records still name makes
those records unreadable: callers re-wrap first.

Every source fails closed: a key it cannot produce raises :class:`KeyUnavailable` naming the key
id, a misconfigured source raises :class:`ConfigError` naming the setting. No message ever
contains key material.
"""

from __future__ import annotations

import abc
import base64
import binascii
import json
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, Protocol, TypeVar

import keyring
import keyring.backends.fail
import keyring.backends.null
from keyring.backend import KeyringBackend
from keyring.errors import KeyringError, NoKeyringError, PasswordDeleteError

from mailbox_worker.errors import ConfigError, KeyUnavailable, VaultError

KEY_LENGTH = 32
"""Bytes of key material in a KEK and in a data key (AES-256)."""

ENV_VAR = "MAILBOX_WORKER_KEYS"
"""The environment variable :class:`EnvKeySource` values come from: ``id1:base64,id2:base64``."""

SOURCE_SETTING = "keys.source"
FILE_SETTING = "keys.file"

_KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_GROUP_OR_OTHER_ACCESS = 0o077
_T = TypeVar("_T")
_P = ParamSpec("_P")


@dataclass(frozen=True)
class KeyEncryptionKey:
    """A KEK: ``key_id`` (stored next to every wrapped key) and 32 bytes of ``material``.

    Its ``repr`` (and ``str``) shows the id only, never the material.
    """

    key_id: str
    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not _KEY_ID_PATTERN.fullmatch(self.key_id):
            raise ValueError(
                "a key id is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        if not isinstance(self.material, bytes) or len(self.material) != KEY_LENGTH:
            raise ValueError(f"key-encryption key {self.key_id!r} must be {KEY_LENGTH} bytes")

    def __repr__(self) -> str:
        return f"KeyEncryptionKey(key_id={self.key_id!r})"


def generate_key(existing_ids: tuple[str, ...] = ()) -> KeyEncryptionKey:
    """Return a new random KEK whose id, ``kek-YYYYMMDD-<8 hex>`` (UTC date), is not in
    ``existing_ids``."""
    while True:
        key_id = f"kek-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"
        if key_id not in existing_ids:
            return KeyEncryptionKey(key_id, secrets.token_bytes(KEY_LENGTH))


class KeySource(Protocol):
    """Where KEKs come from. Implementations are safe to call from several threads."""

    def active_key(self) -> KeyEncryptionKey:
        """The key new wraps use. Raises :class:`KeyUnavailable` when there is none."""
        ...

    def get(self, key_id: str) -> KeyEncryptionKey:
        """The key named ``key_id``; raises :class:`KeyUnavailable` naming it when absent."""
        ...

    def key_ids(self) -> list[str]:
        """The ids of the stored keys, oldest first (empty when none is stored)."""
        ...

    def add_key(self) -> KeyEncryptionKey:
        """Generate and store a new key and make it active; older keys stay readable."""
        ...

    def retire(self, key_id: str) -> None:
        """Remove a key that is not the active one.

        Raises :class:`VaultError` with code ``key_active`` for the active key, and
        :class:`KeyUnavailable` for an unknown id.
        """
        ...


@dataclass(frozen=True)
class _KeySet:
    """What a source holds: the active id, every id oldest first, and the readable keys."""

    active_id: str
    ids: tuple[str, ...]
    keys: Mapping[str, KeyEncryptionKey]


class _StoredKeySource(abc.ABC):
    """A source that persists its keys; subclasses only read and write the store.

    Keys are cached after the first read. ``get`` answers cached keys without I/O and reads the
    store again on a miss (another process may have rotated). ``active_key`` and ``key_ids`` read
    the store on every call, so a rotation or retirement done elsewhere is seen at once; they are
    called rarely (once per new wrap). One lock serialises reads and writes within the process;
    rotate and retire from one process at a time.
    """

    def __init__(self, *, create_if_missing: bool) -> None:
        self._create_if_missing = create_if_missing
        self._lock = threading.Lock()
        self._cache: _KeySet | None = None

    @abc.abstractmethod
    def _describe(self) -> str:
        """Where the keys live, for messages (e.g. ``key file /run/keys.json``)."""

    @abc.abstractmethod
    def _read(self, known: Mapping[str, KeyEncryptionKey]) -> _KeySet | None:
        """Read the store; ``None`` when it holds no key. ``known`` keys need not be re-read."""

    @abc.abstractmethod
    def _write(self, new: _KeySet, old: _KeySet | None) -> None:
        """Make the store hold ``new`` (it held ``old``)."""

    def active_key(self) -> KeyEncryptionKey:
        with self._lock:
            keyset = self._require()
            return self._lookup(keyset, keyset.active_id)

    def get(self, key_id: str) -> KeyEncryptionKey:
        with self._lock:
            if self._cache is not None and key_id in self._cache.keys:
                return self._cache.keys[key_id]
            keyset = self._require()
            return self._lookup(keyset, key_id)

    def key_ids(self) -> list[str]:
        with self._lock:
            keyset = self._refresh()
            return list(keyset.ids) if keyset is not None else []

    def add_key(self) -> KeyEncryptionKey:
        with self._lock:
            old = self._refresh()
            ids = old.ids if old is not None else ()
            key = generate_key(ids)
            keys = {**(old.keys if old is not None else {}), key.key_id: key}
            new = _KeySet(active_id=key.key_id, ids=(*ids, key.key_id), keys=keys)
            self._write(new, old)
            self._cache = new
            return key

    def retire(self, key_id: str) -> None:
        with self._lock:
            old = self._refresh()
            if old is None or key_id not in old.ids:
                raise KeyUnavailable(f"key-encryption key {key_id!r} is not in {self._describe()}")
            if key_id == old.active_id:
                raise VaultError(
                    f"key-encryption key {key_id!r} is the active key; add a new key first",
                    code="key_active",
                )
            keys = {kid: key for kid, key in old.keys.items() if kid != key_id}
            new = _KeySet(
                active_id=old.active_id,
                ids=tuple(kid for kid in old.ids if kid != key_id),
                keys=keys,
            )
            self._write(new, old)
            self._cache = new

    def _refresh(self) -> _KeySet | None:
        """Read the store (lock held), cache what it holds and return it."""
        self._cache = self._read(self._cache.keys if self._cache is not None else {})
        return self._cache

    def _require(self) -> _KeySet:
        """Like :meth:`_refresh`, but create the first key or raise when the store is empty."""
        keyset = self._refresh()
        if keyset is not None:
            return keyset
        if not self._create_if_missing:
            raise KeyUnavailable(
                f"no key-encryption key in {self._describe()}; run `mailbox-worker keys rotate` "
                "to create one, or enable keys.create_if_missing"
            )
        key = generate_key()
        keyset = _KeySet(active_id=key.key_id, ids=(key.key_id,), keys={key.key_id: key})
        self._write(keyset, None)
        self._cache = keyset
        return keyset

    def _lookup(self, keyset: _KeySet, key_id: str) -> KeyEncryptionKey:
        if key_id in keyset.keys:
            return keyset.keys[key_id]
        if key_id in keyset.ids:
            raise KeyUnavailable(
                f"key-encryption key {key_id!r} is listed in {self._describe()} "
                "but its material is missing"
            )
        raise KeyUnavailable(
            f"key-encryption key {key_id!r} is not in {self._describe()} (retired or never added)"
        )


class FileKeySource(_StoredKeySource):
    """Keys in a JSON file ``{"active": id, "keys": {id: base64 material}}``.

    The file must not be accessible by group or others (mode 0600 or 0400); it is rewritten
    atomically (temporary file, fsync, ``os.replace``) with mode 0600. Errors name the
    ``keys.file`` setting. Without ``create_if_missing``, a missing file raises
    :class:`KeyUnavailable`; with it, the file is created holding one new key.
    """

    def __init__(self, path: Path, create_if_missing: bool = False) -> None:
        super().__init__(create_if_missing=create_if_missing)
        self._path = Path(path)

    def _describe(self) -> str:
        return f"key file {str(self._path)!r}"

    def _read(self, known: Mapping[str, KeyEncryptionKey]) -> _KeySet | None:
        try:
            mode = self._path.stat().st_mode
            if os.name == "posix" and mode & _GROUP_OR_OTHER_ACCESS:
                raise ConfigError(
                    FILE_SETTING,
                    f"{self._describe()} is accessible by group or others (mode {mode & 0o777:o}); "
                    f"run `chmod 600 {self._path}` (for a mounted secret, set its mode to 0400)",
                )
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ConfigError(
                FILE_SETTING, f"cannot read {self._describe()}: {error.strerror}"
            ) from None
        return self._parse(text)

    def _parse(self, text: str) -> _KeySet:
        def malformed(reason: str) -> ConfigError:
            return ConfigError(FILE_SETTING, f"{self._describe()} is malformed: {reason}")

        try:
            document = json.loads(text)
        except ValueError:
            raise malformed("not JSON") from None
        if not isinstance(document, dict):
            raise malformed('expected {"active": id, "keys": {id: base64}}')
        active, encoded_keys = document.get("active"), document.get("keys")
        if not isinstance(encoded_keys, dict) or not encoded_keys:
            raise malformed('"keys" must be a non-empty object of id -> base64 key')
        keys = {}
        for key_id, encoded in encoded_keys.items():
            try:
                keys[key_id] = _decode_key(key_id, encoded)
            except ValueError as error:
                raise malformed(str(error)) from None
        if not isinstance(active, str) or active not in keys:
            raise malformed('"active" must name one of "keys"')
        return _KeySet(active_id=active, ids=tuple(keys), keys=keys)

    def _write(self, new: _KeySet, old: _KeySet | None) -> None:
        document = {
            "active": new.active_id,
            "keys": {kid: _encode_key(new.keys[kid]) for kid in new.ids},
        }
        try:
            self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _write_atomically(self._path, json.dumps(document, indent=2) + "\n")
        except OSError as error:
            raise ConfigError(
                FILE_SETTING, f"cannot write {self._describe()}: {error.strerror}"
            ) from None


class KeyringKeySource(_StoredKeySource):
    """Keys in the operating system's keyring, under ``service``.

    Entry ``index`` holds ``{"active": id, "keys": [ids oldest first]}``; entry ``key:<id>``
    holds each key's base64 material. ``backend`` defaults to ``keyring.get_keyring()`` at each
    call. No usable backend (``NoKeyringError``, the ``fail`` or ``null`` backend) raises
    :class:`ConfigError` on ``keys.source``; other keyring failures raise
    :class:`KeyUnavailable`.
    """

    _INDEX = "index"

    def __init__(
        self,
        service: str = "mailbox-worker",
        create_if_missing: bool = False,
        *,
        backend: KeyringBackend | None = None,
    ) -> None:
        super().__init__(create_if_missing=create_if_missing)
        self._service = service
        self._explicit_backend = backend

    def _describe(self) -> str:
        return f"keyring service {self._service!r}"

    def _read(self, known: Mapping[str, KeyEncryptionKey]) -> _KeySet | None:
        backend = self._backend()
        raw_index = self._call(backend.get_password, self._service, self._INDEX)
        if raw_index is None:
            return None
        active, ids = self._parse_index(raw_index)
        keys: dict[str, KeyEncryptionKey] = {}
        for key_id in ids:
            if key_id in known:
                keys[key_id] = known[key_id]
                continue
            encoded = self._call(backend.get_password, self._service, f"key:{key_id}")
            if encoded is None:
                continue  # reported by _lookup when someone asks for this key
            try:
                keys[key_id] = _decode_key(key_id, encoded)
            except ValueError as error:
                raise KeyUnavailable(f"{self._describe()}: {error}") from None
        return _KeySet(active_id=active, ids=ids, keys=keys)

    def _parse_index(self, raw_index: str) -> tuple[str, tuple[str, ...]]:
        try:
            index = json.loads(raw_index)
            active, ids = index["active"], tuple(index["keys"])
        except (ValueError, TypeError, KeyError):
            raise KeyUnavailable(f"the key index in {self._describe()} is malformed") from None
        if not all(isinstance(kid, str) for kid in ids) or active not in ids:
            raise KeyUnavailable(f"the key index in {self._describe()} is malformed")
        return active, ids

    def _write(self, new: _KeySet, old: _KeySet | None) -> None:
        backend = self._backend()
        old_ids = old.ids if old is not None else ()
        # Key entries before the index, removals after it: a crash in between leaves an
        # unused entry, never an index naming a key that is not stored.
        for key_id in new.ids:
            if key_id not in old_ids:
                self._store_key(backend, new.keys[key_id])
        index = json.dumps({"active": new.active_id, "keys": list(new.ids)})
        self._call(backend.set_password, self._service, self._INDEX, index)
        for key_id in old_ids:
            if key_id not in new.ids:
                with suppress(PasswordDeleteError):
                    self._call(backend.delete_password, self._service, f"key:{key_id}")

    def _store_key(self, backend: KeyringBackend, key: KeyEncryptionKey) -> None:
        username, encoded = f"key:{key.key_id}", _encode_key(key)
        self._call(backend.set_password, self._service, username, encoded)
        # A backend that silently drops writes would lose every token wrapped under this key.
        if self._call(backend.get_password, self._service, username) != encoded:
            raise ConfigError(
                SOURCE_SETTING,
                f"keyring backend {type(backend).__name__} did not keep the key it was given; "
                'use another keyring backend or keys.source = "file" / "env"',
            )

    def _backend(self) -> KeyringBackend:
        try:
            backend = self._explicit_backend or keyring.get_keyring()
        except KeyringError:
            raise _no_keyring_backend() from None
        if isinstance(backend, keyring.backends.fail.Keyring | keyring.backends.null.Keyring):
            raise _no_keyring_backend()
        return backend

    def _call(self, operation: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return operation(*args, **kwargs)
        except NoKeyringError:
            raise _no_keyring_backend() from None
        except PasswordDeleteError:
            raise
        except KeyringError as error:
            # The backend's own message is left out: we cannot vouch for what it contains.
            raise KeyUnavailable(
                f"{self._describe()} failed: {type(error).__name__} from the keyring backend"
            ) from None


class EnvKeySource:
    """Read-only keys from the ``MAILBOX_WORKER_KEYS`` environment variable.

    The caller passes the variable's value: ``id1:base64key1,id2:base64key2`` (standard base64
    of 32 bytes each; the first key is active). A malformed value raises :class:`ConfigError`
    naming the variable, without echoing the value. Keys are managed by the deployment, so
    ``add_key`` and ``retire`` raise :class:`ConfigError`.
    """

    def __init__(self, value: str) -> None:
        self._keys = _parse_env_value(value)
        self._active_id = next(iter(self._keys))

    def active_key(self) -> KeyEncryptionKey:
        return self._keys[self._active_id]

    def get(self, key_id: str) -> KeyEncryptionKey:
        try:
            return self._keys[key_id]
        except KeyError:
            raise KeyUnavailable(f"key-encryption key {key_id!r} is not in {ENV_VAR}") from None

    def key_ids(self) -> list[str]:
        return list(self._keys)

    def add_key(self) -> KeyEncryptionKey:
        raise _env_keys_are_read_only()

    def retire(self, key_id: str) -> None:
        raise _env_keys_are_read_only()


def _parse_env_value(value: str) -> dict[str, KeyEncryptionKey]:
    def malformed(reason: str) -> ConfigError:
        return ConfigError(
            ENV_VAR, f"{reason}; expected id1:base64key1,id2:base64key2 (first is active)"
        )

    if not value.strip():
        raise malformed("is empty")
    keys: dict[str, KeyEncryptionKey] = {}
    for position, entry in enumerate(value.split(","), start=1):
        key_id, separator, encoded = (part.strip() for part in entry.partition(":"))
        if not separator:
            raise malformed(f"entry {position} has no ':'")
        if not _KEY_ID_PATTERN.fullmatch(key_id):
            # Not echoed: a value written the wrong way round would put the key here.
            raise malformed(f"entry {position} has an invalid key id")
        if key_id in keys:
            raise malformed(f"key id {key_id!r} appears twice")
        try:
            keys[key_id] = _decode_key(key_id, encoded)
        except ValueError as error:
            raise malformed(str(error)) from None
    return keys


def _env_keys_are_read_only() -> ConfigError:
    return ConfigError(
        SOURCE_SETTING,
        f"keys from {ENV_VAR} are managed by the deployment: change the variable and restart, "
        'or use keys.source = "keyring" or "file" to manage keys with mailbox-worker',
    )


def _no_keyring_backend() -> ConfigError:
    return ConfigError(
        SOURCE_SETTING,
        "no usable keyring backend; install one (e.g. the Secret Service, macOS Keychain, "
        'Windows Credential Locker or keyrings.alt) or set keys.source = "file" or "env"',
    )


def _encode_key(key: KeyEncryptionKey) -> str:
    return base64.b64encode(key.material).decode("ascii")


def _decode_key(key_id: object, encoded: object) -> KeyEncryptionKey:
    """Build a KEK from stored text; ``ValueError`` (naming the id, never the text) if bad."""
    if not isinstance(key_id, str) or not _KEY_ID_PATTERN.fullmatch(key_id):
        raise ValueError("a key id is invalid")
    if not isinstance(encoded, str):
        raise ValueError(f"key {key_id!r} is not a base64 string")
    try:
        material = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"key {key_id!r} is not valid base64") from None
    if len(material) != KEY_LENGTH:
        raise ValueError(f"key {key_id!r} is {len(material)} bytes, expected {KEY_LENGTH}")
    return KeyEncryptionKey(key_id, material)


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so readers see the old or the new file, never a part."""
    # mkstemp creates the file with mode 0600 whatever the umask.
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    if os.name == "posix":
        # Losing this file loses every token, so make the rename itself durable.
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


if TYPE_CHECKING:
    # mypy proves each adapter conforms to the port.
    _conforming: tuple[type[KeySource], ...] = (KeyringKeySource, FileKeySource, EnvKeySource)
