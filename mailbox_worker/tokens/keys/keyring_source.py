"""Key-encryption keys in the operating system's keyring (the default key source).

See :mod:`mailbox_worker.tokens.keys` for the port and what every source guarantees.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import keyring
import keyring.backends.fail
import keyring.backends.null
from keyring.backend import KeyringBackend
from keyring.errors import KeyringError, NoKeyringError, PasswordDeleteError

from mailbox_worker.errors import ConfigError, KeyUnavailable
from mailbox_worker.tokens.keys.encoding import decode_key, encode_key
from mailbox_worker.tokens.keys.port import (
    SOURCE_SETTING,
    Clock,
    KeyEncryptionKey,
    KeySource,
    system_clock,
)
from mailbox_worker.tokens.keys.stored import KeySet, StoredKeySource
from mailbox_worker.tokens.keys.times import KeyTimes, times_from_json, times_to_json

_T = TypeVar("_T")
_P = ParamSpec("_P")


class KeyringKeySource(StoredKeySource):
    """Keys in the operating system's keyring, under ``service``.

    Entry ``index`` holds ``{"active": id, "keys": [ids oldest first], "times": {...}}``
    (``"times"``, see :mod:`~mailbox_worker.tokens.keys.times`, is absent from indexes written
    before it existed); entry ``key:<id>`` holds each key's base64 material. ``backend``
    defaults to ``keyring.get_keyring()`` at each call. No usable backend (``NoKeyringError``,
    the ``fail`` or ``null`` backend) raises :class:`ConfigError` on ``keys.source``; other
    keyring failures raise :class:`KeyUnavailable`.
    """

    _INDEX = "index"

    def __init__(
        self,
        service: str = "mailbox-worker",
        create_if_missing: bool = False,
        *,
        backend: KeyringBackend | None = None,
        clock: Clock = system_clock,
    ) -> None:
        super().__init__(create_if_missing=create_if_missing, clock=clock)
        self._service = service
        self._explicit_backend = backend

    def _describe(self) -> str:
        return f"keyring service {self._service!r}"

    def _read(self, known: Mapping[str, KeyEncryptionKey]) -> KeySet | None:
        backend = self._backend()
        raw_index = self._call(backend.get_password, self._service, self._INDEX)
        if raw_index is None:
            return None
        active, ids, times = self._parse_index(raw_index)
        keys: dict[str, KeyEncryptionKey] = {}
        for key_id in ids:
            if key_id in known:
                keys[key_id] = known[key_id]
                continue
            encoded = self._call(backend.get_password, self._service, f"key:{key_id}")
            if encoded is None:
                continue  # reported by _lookup when someone asks for this key
            try:
                keys[key_id] = decode_key(key_id, encoded)
            except ValueError as error:
                raise KeyUnavailable(f"{self._describe()}: {error}") from None
        return KeySet(active_id=active, ids=ids, keys=keys, times=times)

    def _parse_index(self, raw_index: str) -> tuple[str, tuple[str, ...], dict[str, KeyTimes]]:
        try:
            index = json.loads(raw_index)
            active, ids = index["active"], tuple(index["keys"])
            if not all(isinstance(kid, str) for kid in ids) or active not in ids:
                raise ValueError("the active key is not listed")
            times = times_from_json(index.get("times"), ids)
        except (ValueError, TypeError, KeyError, AttributeError):
            raise KeyUnavailable(f"the key index in {self._describe()} is malformed") from None
        return active, ids, times

    def _write(self, new: KeySet, old: KeySet | None) -> None:
        backend = self._backend()
        old_ids = old.ids if old is not None else ()
        # Key entries before the index, removals after it: a crash in between leaves an
        # unused entry, never an index naming a key that is not stored.
        for key_id in new.ids:
            if key_id not in old_ids:
                self._store_key(backend, new.keys[key_id])
        index = json.dumps(
            {
                "active": new.active_id,
                "keys": list(new.ids),
                "times": times_to_json(new.times, new.ids),
            }
        )
        self._call(backend.set_password, self._service, self._INDEX, index)
        for key_id in old_ids:
            if key_id not in new.ids:
                with suppress(PasswordDeleteError):
                    self._call(backend.delete_password, self._service, f"key:{key_id}")

    def _store_key(self, backend: KeyringBackend, key: KeyEncryptionKey) -> None:
        username, encoded = f"key:{key.key_id}", encode_key(key)
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


def _no_keyring_backend() -> ConfigError:
    return ConfigError(
        SOURCE_SETTING,
        "no usable keyring backend; install one (e.g. the Secret Service, macOS Keychain, "
        'Windows Credential Locker or keyrings.alt) or set keys.source = "file" or "env"',
    )


if TYPE_CHECKING:
    # mypy proves the adapter conforms to the port.
    _conforming: type[KeySource] = KeyringKeySource
