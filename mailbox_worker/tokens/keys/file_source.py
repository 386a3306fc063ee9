"""Key-encryption keys in a JSON file of mode 0600: a container's mounted secret, the demo."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from mailbox_worker.errors import ConfigError
from mailbox_worker.tokens.keys.encoding import decode_key, encode_key
from mailbox_worker.tokens.keys.port import Clock, KeyEncryptionKey, KeySource, system_clock
from mailbox_worker.tokens.keys.stored import KeySet, StoredKeySource
from mailbox_worker.tokens.keys.times import times_from_json, times_to_json

if sys.platform != "win32":
    import fcntl

FILE_SETTING = "keys.file"
_GROUP_OR_OTHER_ACCESS = 0o077


class FileKeySource(StoredKeySource):
    """Keys in a JSON file ``{"active": id, "keys": {id: base64 material}, "times": {...}}``.

    ``"times"`` (see :mod:`~mailbox_worker.tokens.keys.times`) is optional: files written
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
