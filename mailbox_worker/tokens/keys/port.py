"""The key-encryption key (KEK) and the port every key source implements.

A KEK wraps each mailbox's data key (see :mod:`mailbox_worker.tokens.envelope`); it never sits
in the database. The sources (the package docstring lists them) conform to :class:`KeySource`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from mailbox_worker.tokens.keys.times import KeyTimes

KEY_LENGTH = 32
"""Bytes of key material in a KEK and in a data key (AES-256)."""

SOURCE_SETTING = "keys.source"
"""The setting that names the key source; errors of a source name it."""

KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

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
