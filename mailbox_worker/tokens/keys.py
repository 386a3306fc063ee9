"""Key-encryption keys (KEKs) and the sources they come from.

A KEK wraps each mailbox's data key (see :mod:`mailbox_worker.tokens.envelope`); it never sits in
the database. :class:`KeySource` is the port, with three adapters:

    KeyringKeySource   the operating system's keyring, the default (``keyring_keys.py``)
    FileKeySource      a JSON file of mode 0600: a container's mounted secret, the demo (here)
    EnvKeySource       the ``MAILBOX_WORKER_KEYS`` environment variable, read-only (``env_keys.py``)

Rotation: ``add_key()`` stores a new key and makes it the active one (the key new wraps use);
older keys stay readable, so data keys wrapped under them still unwrap. Once every record has been
re-wrapped, ``retire(old_id)`` removes the old key. Retiring a key that records still name makes
those records unreadable: callers re-wrap first. The writable stores record when each key was
created and superseded (:mod:`mailbox_worker.tokens.key_times`), from a clock they are given, so
that :mod:`mailbox_worker.tokens.rotation` can rotate on a schedule (see ``docs/keys.md``).

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
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, Protocol, TypeVar

from mailbox_worker.errors import ConfigError, KeyUnavailable, VaultError
from mailbox_worker.tokens.key_times import KeyTimes, times_from_json, times_to_json

if sys.platform != "win32":
    import fcntl

KEY_LENGTH = 32
"""Bytes of key material in a KEK and in a data key (AES-256)."""

ENV_VAR = "MAILBOX_WORKER_KEYS"
"""The environment variable :class:`EnvKeySource` values come from: ``id1:base64,id2:base64``."""

SOURCE_SETTING = "keys.source"
FILE_SETTING = "keys.file"

KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_GROUP_OR_OTHER_ACCESS = 0o077
_T = TypeVar("_T")
_P = ParamSpec("_P")

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware (UTC); injected so tests can move time."""


def system_clock() -> datetime:
    """The real current time in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class KeyEncryptionKey:
    """A KEK: ``key_id`` (stored next to every wrapped key) and 32 bytes of ``material``.

    Its ``repr`` (and ``str``) shows the id only, never the material.
    """

    key_id: str
    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not KEY_ID_PATTERN.fullmatch(self.key_id):
            raise ValueError(
                "a key id is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        if not isinstance(self.material, bytes) or len(self.material) != KEY_LENGTH:
            raise ValueError(f"key-encryption key {self.key_id!r} must be {KEY_LENGTH} bytes")

    def __repr__(self) -> str:
        return f"KeyEncryptionKey(key_id={self.key_id!r})"


@dataclass(frozen=True)
class KeyInfo:
    """What a source says about one key, without its material: its id, whether it is the
    active key, and the times its store recorded (unknown ones are ``None``)."""

    key_id: str
    active: bool
    times: KeyTimes


def generate_key(
    existing_ids: tuple[str, ...] = (), *, now: datetime | None = None
) -> KeyEncryptionKey:
    """Return a new random KEK whose id, ``kek-YYYYMMDD-<8 hex>`` (UTC date of ``now``, by
    default the current time), is not in ``existing_ids``."""
    date = (now or system_clock()).astimezone(UTC)
    while True:
        key_id = f"kek-{date:%Y%m%d}-{secrets.token_hex(4)}"
        if key_id not in existing_ids:
            return KeyEncryptionKey(key_id, secrets.token_bytes(KEY_LENGTH))


class KeySource(Protocol):
    """Where KEKs come from. Implementations are safe to call from several threads."""

    @property
    def read_only(self) -> bool:
        """True when keys are managed outside mailbox-worker (``add_key``/``retire`` refuse)."""
        ...

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

    def key_infos(self) -> list[KeyInfo]:
        """Every stored key, oldest first, with its recorded times (empty when none)."""
        ...

    def stamp_missing_times(self) -> list[str]:
        """Record the times the store lacks, as :meth:`KeyTimes.filled` decides.

        Times already recorded never change. Returns the ids whose times were stamped; a
        read-only source stamps nothing.
        """
        ...


@dataclass(frozen=True)
class KeySet:
    """What a source holds: the active id, every id oldest first, the readable keys and the
    recorded times (keys without any have no entry)."""

    active_id: str
    ids: tuple[str, ...]
    keys: Mapping[str, KeyEncryptionKey]
    times: Mapping[str, KeyTimes] = field(default_factory=dict)


class StoredKeySource(abc.ABC):
    """A source that persists its keys; subclasses only read and write the store.

    Keys are cached after the first read. ``get`` answers cached keys without I/O and reads the
    store again on a miss (another process may have rotated). ``active_key`` and ``key_ids`` read
    the store on every call, so a rotation or retirement done elsewhere is seen at once; they are
    called rarely (once per new wrap). One lock serialises reads and writes within the process;
    rotate and retire from one process at a time.
    """

    def __init__(self, *, create_if_missing: bool, clock: Clock) -> None:
        self._create_if_missing = create_if_missing
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: KeySet | None = None

    @property
    def read_only(self) -> bool:
        return False

    def _exclusive(self) -> AbstractContextManager[None]:
        """Keeps other processes from writing the store meanwhile (none by default); held
        around every read-modify-write, inside the thread lock."""
        return nullcontext()

    @abc.abstractmethod
    def _describe(self) -> str:
        """Where the keys live, for messages (e.g. ``key file /run/keys.json``)."""

    @abc.abstractmethod
    def _read(self, known: Mapping[str, KeyEncryptionKey]) -> KeySet | None:
        """Read the store; ``None`` when it holds no key. ``known`` keys need not be re-read."""

    @abc.abstractmethod
    def _write(self, new: KeySet, old: KeySet | None) -> None:
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

    def key_infos(self) -> list[KeyInfo]:
        with self._lock:
            keyset = self._refresh()
            if keyset is None:
                return []
            return [
                KeyInfo(kid, kid == keyset.active_id, keyset.times.get(kid, KeyTimes()))
                for kid in keyset.ids
            ]

    def stamp_missing_times(self) -> list[str]:
        with self._lock, self._exclusive():
            old = self._refresh()
            if old is None:
                return []
            now = self._clock()
            times = dict(old.times)
            stamped = []
            for kid in old.ids:
                known = times.get(kid, KeyTimes())
                if not known.is_complete(active=kid == old.active_id):
                    times[kid] = known.filled(kid, active=kid == old.active_id, now=now)
                    stamped.append(kid)
            if stamped:
                new = replace(old, times=times)
                self._write(new, old)
                self._cache = new
            return stamped

    def add_key(self) -> KeyEncryptionKey:
        with self._lock, self._exclusive():
            old = self._refresh()
            now = self._clock()
            ids = old.ids if old is not None else ()
            key = generate_key(ids, now=now)
            keys = {**(old.keys if old is not None else {}), key.key_id: key}
            times = {**(old.times if old is not None else {}), key.key_id: KeyTimes(now)}
            if old is not None:
                times[old.active_id] = replace(
                    times.get(old.active_id, KeyTimes()), superseded_at=now
                )
            new = KeySet(active_id=key.key_id, ids=(*ids, key.key_id), keys=keys, times=times)
            self._write(new, old)
            self._cache = new
            return key

    def retire(self, key_id: str) -> None:
        with self._lock, self._exclusive():
            old = self._refresh()
            if old is None or key_id not in old.ids:
                raise KeyUnavailable(f"key-encryption key {key_id!r} is not in {self._describe()}")
            if key_id == old.active_id:
                raise VaultError(
                    f"key-encryption key {key_id!r} is the active key; add a new key first",
                    code="key_active",
                )
            keys = {kid: key for kid, key in old.keys.items() if kid != key_id}
            new = KeySet(
                active_id=old.active_id,
                ids=tuple(kid for kid in old.ids if kid != key_id),
                keys=keys,
                times={kid: times for kid, times in old.times.items() if kid != key_id},
            )
            self._write(new, old)
            self._cache = new

    def _refresh(self) -> KeySet | None:
        """Read the store (lock held), cache what it holds and return it."""
        self._cache = self._read(self._cache.keys if self._cache is not None else {})
        return self._cache

    def _require(self) -> KeySet:
        """Like :meth:`_refresh`, but create the first key or raise when the store is empty."""
        keyset = self._refresh()
        if keyset is not None:
            return keyset
        with self._exclusive():
            return self._create_first_key()

    def _create_first_key(self) -> KeySet:
        """Create the store's first key, unless another process just did (lock held)."""
        keyset = self._refresh()
        if keyset is not None:
            return keyset
        if not self._create_if_missing:
            raise KeyUnavailable(
                f"no key-encryption key in {self._describe()}; run `mailbox-worker keys rotate` "
                "to create one, or enable keys.create_if_missing"
            )
        now = self._clock()
        key = generate_key(now=now)
        keyset = KeySet(
            active_id=key.key_id,
            ids=(key.key_id,),
            keys={key.key_id: key},
            times={key.key_id: KeyTimes(now)},
        )
        self._write(keyset, None)
        self._cache = keyset
        return keyset

    def _lookup(self, keyset: KeySet, key_id: str) -> KeyEncryptionKey:
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


class FileKeySource(StoredKeySource):
    """Keys in a JSON file ``{"active": id, "keys": {id: base64 material}, "times": {...}}``.

    ``"times"`` (see :mod:`~mailbox_worker.tokens.key_times`) is optional: files written
    before it existed are read as they are, their keys' times unknown until stamped.

    The file must not be accessible by group or others (mode 0600 or 0400); it is rewritten
    atomically (temporary file, fsync, ``os.replace``) with mode 0600. Errors name the
    ``keys.file`` setting. Without ``create_if_missing``, a missing file raises
    :class:`KeyUnavailable`; with it, the file is created holding one new key.
    """

    def __init__(
        self, path: Path, create_if_missing: bool = False, *, clock: Clock = system_clock
    ) -> None:
        super().__init__(create_if_missing=create_if_missing, clock=clock)
        self._path = Path(path)

    @property
    def read_only(self) -> bool:
        """True when the file exists in a directory this process cannot write (e.g. a
        read-only secret mount): it can be read, never rotated."""
        return self._path.exists() and not os.access(self._path.parent, os.W_OK)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """An advisory lock (``flock``) on ``<file>.lock`` beside the key file, so that two
        processes (the daemon's scheduled rotation and the CLI) never interleave their
        read-modify-write cycles and lose a key."""
        if sys.platform == "win32":  # pragma: no cover - no flock; rotate from one process
            yield
            return
        lock_path = self._path.with_name(self._path.name + ".lock")
        try:
            self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise ConfigError(
                FILE_SETTING, f"cannot lock {self._describe()}: {error.strerror}"
            ) from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # releases the lock

    def _describe(self) -> str:
        return f"key file {str(self._path)!r}"

    def _read(self, known: Mapping[str, KeyEncryptionKey]) -> KeySet | None:
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

    def _parse(self, text: str) -> KeySet:
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
                keys[key_id] = decode_key(key_id, encoded)
            except ValueError as error:
                raise malformed(str(error)) from None
        if not isinstance(active, str) or active not in keys:
            raise malformed('"active" must name one of "keys"')
        try:
            times = times_from_json(document.get("times"), keys)
        except ValueError as error:
            raise malformed(str(error)) from None
        return KeySet(active_id=active, ids=tuple(keys), keys=keys, times=times)

    def _write(self, new: KeySet, old: KeySet | None) -> None:
        document = {
            "active": new.active_id,
            "keys": {kid: encode_key(new.keys[kid]) for kid in new.ids},
            "times": times_to_json(new.times, new.ids),
        }
        try:
            self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _write_atomically(self._path, json.dumps(document, indent=2) + "\n")
        except OSError as error:
            raise ConfigError(
                FILE_SETTING, f"cannot write {self._describe()}: {error.strerror}"
            ) from None


def encode_key(key: KeyEncryptionKey) -> str:
    return base64.b64encode(key.material).decode("ascii")


def decode_key(key_id: object, encoded: object) -> KeyEncryptionKey:
    """Build a KEK from stored text; ``ValueError`` (naming the id, never the text) if bad."""
    if not isinstance(key_id, str) or not KEY_ID_PATTERN.fullmatch(key_id):
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
    # mypy proves the adapter conforms to the port.
    _conforming: type[KeySource] = FileKeySource
