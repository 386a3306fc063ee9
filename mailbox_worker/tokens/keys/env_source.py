"""Read-only key-encryption keys from the ``MAILBOX_WORKER_KEYS`` environment variable.

See :mod:`mailbox_worker.tokens.keys` for the port and what every source guarantees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailbox_worker.errors import ConfigError, KeyUnavailable
from mailbox_worker.tokens.keys.encoding import decode_key
from mailbox_worker.tokens.keys.port import (
    KEY_ID_PATTERN,
    SOURCE_SETTING,
    KeyEncryptionKey,
    KeyInfo,
    KeySource,
)
from mailbox_worker.tokens.keys.times import KeyTimes

ENV_VAR = "MAILBOX_WORKER_KEYS"
"""The environment variable :class:`EnvKeySource` values come from: ``id1:base64,id2:base64``."""


class EnvKeySource:
    """Read-only keys from the ``MAILBOX_WORKER_KEYS`` environment variable.

    The caller passes the variable's value: ``id1:base64key1,id2:base64key2`` (standard base64
    of 32 bytes each; the first key is active). A malformed value raises :class:`ConfigError`
    naming the variable, without echoing the value. Keys are managed by the deployment, so
    ``add_key`` and ``retire`` raise :class:`ConfigError`, no times are known and scheduled
    rotation cannot run (the deployment rotates by replacing the variable).
    """

    read_only = True

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

    def key_infos(self) -> list[KeyInfo]:
        return [KeyInfo(kid, kid == self._active_id, KeyTimes()) for kid in self._keys]

    def stamp_missing_times(self) -> list[str]:
        return []

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
        if not KEY_ID_PATTERN.fullmatch(key_id):
            # Not echoed: a value written the wrong way round would put the key here.
            raise malformed(f"entry {position} has an invalid key id")
        if key_id in keys:
            raise malformed(f"key id {key_id!r} appears twice")
        try:
            keys[key_id] = decode_key(key_id, encoded)
        except ValueError as error:
            raise malformed(str(error)) from None
    return keys


def _env_keys_are_read_only() -> ConfigError:
    return ConfigError(
        SOURCE_SETTING,
        f"keys from {ENV_VAR} are managed by the deployment: change the variable and restart, "
        'or use keys.source = "keyring" or "file" to manage keys with mailbox-worker',
    )


if TYPE_CHECKING:
    # mypy proves the adapter conforms to the port.
    _conforming: type[KeySource] = EnvKeySource
