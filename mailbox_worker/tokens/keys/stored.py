"""The base of the sources that persist their keys (a file, the keyring): caching, locking,
rotation and retirement written once; each subclass only reads and writes its store."""

from __future__ import annotations

import abc
import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace

from mailbox_worker.errors import KeyUnavailable, VaultError
from mailbox_worker.tokens.keys.port import Clock, KeyEncryptionKey, KeyInfo, generate_key
from mailbox_worker.tokens.keys.times import KeyTimes


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
