"""Envelope encryption of OAuth tokens: pure functions, no I/O.

Two layers, both AES-256-GCM with a fresh random 96-bit nonce per encryption:

* a **data key** (32 random bytes, one per mailbox) seals the mailbox's token records;
* a **key-encryption key** (KEK, from a :class:`~mailbox_worker.tokens.keys.KeySource`) wraps
  the data key. Only the wrapped form is ever stored; the KEK never sits in the database.

Byte layouts (version 1)::

    wrapped data key   version (1 byte = 0x01) || nonce (12) || ciphertext (32) || tag (16)
    sealed record      version (1 byte = 0x01) || nonce (12) || ciphertext (n)  || tag (16)

The associated data authenticated with a wrapped data key is
``encode_fields("mailbox-worker/data-key", version, mailbox_id, kek.key_id)``: a wrapped key
copied to another mailbox, or relabelled with another key id, fails to unwrap. The associated
data of a sealed record is ``"mailbox-worker/token-record"``, the version and the caller's
``associated_data`` (build it with :func:`encode_fields`, e.g. from the mailbox id and the
record kind). The version byte is authenticated too.

Every failure to unwrap or open raises :class:`~mailbox_worker.errors.DecryptionFailed`; its
message never contains key material, plaintext or ciphertext.

A data key encrypts few records in its life (one per token refresh), far below the 2**32
random-nonce limit of AES-GCM.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mailbox_worker.errors import DecryptionFailed
from mailbox_worker.tokens.keys.port import KEY_LENGTH, KeyEncryptionKey

FORMAT_VERSION = 1
"""The format version written by this module (the first byte of every output)."""

NONCE_LENGTH = 12
TAG_LENGTH = 16

_DATA_KEY_PURPOSE = "mailbox-worker/data-key"
_RECORD_PURPOSE = "mailbox-worker/token-record"
_VERSION_PREFIX = bytes([FORMAT_VERSION])
_WRAPPED_LENGTH = 1 + NONCE_LENGTH + KEY_LENGTH + TAG_LENGTH


def new_data_key() -> bytes:
    """Return a fresh AES-256 data key: 32 bytes from the operating system's CSPRNG."""
    return os.urandom(KEY_LENGTH)


def encode_fields(*fields: str | bytes) -> bytes:
    """Encode ``fields`` unambiguously for use as associated data.

    Each field is written as its 4-byte big-endian length followed by its bytes (``str`` as
    UTF-8), so ``("ab", "c")`` and ``("a", "bc")`` never encode alike.
    """
    parts: list[bytes] = []
    for field in fields:
        raw = field.encode("utf-8") if isinstance(field, str) else field
        parts.append(len(raw).to_bytes(4, "big"))
        parts.append(raw)
    return b"".join(parts)


def wrap_data_key(kek: KeyEncryptionKey, data_key: bytes, *, mailbox_id: str) -> bytes:
    """Encrypt ``data_key`` under ``kek`` for ``mailbox_id``; return the wrapped key.

    The result (61 bytes, layout in the module docstring) unwraps only with the same KEK and
    the same mailbox id. Store ``kek.key_id`` next to it: it is needed to unwrap.
    """
    _require_key_length(data_key, "data_key")
    nonce = os.urandom(NONCE_LENGTH)
    sealed = AESGCM(kek.material).encrypt(
        nonce, data_key, _data_key_associated_data(FORMAT_VERSION, mailbox_id, kek.key_id)
    )
    return _VERSION_PREFIX + nonce + sealed


def unwrap_data_key(kek: KeyEncryptionKey, wrapped: bytes, *, mailbox_id: str) -> bytes:
    """Return the data key that :func:`wrap_data_key` wrapped under ``kek`` for ``mailbox_id``.

    Raises :class:`DecryptionFailed` (naming the mailbox id and key id, never material) when the
    format version is unknown, the bytes were altered, or the KEK or mailbox id differ.
    """
    _require_known_version(wrapped, f"wrapped data key of mailbox {mailbox_id!r}")
    if len(wrapped) != _WRAPPED_LENGTH:
        raise DecryptionFailed(f"wrapped data key of mailbox {mailbox_id!r} has a wrong length")
    nonce, sealed = wrapped[1 : 1 + NONCE_LENGTH], wrapped[1 + NONCE_LENGTH :]
    try:
        data_key = AESGCM(kek.material).decrypt(
            nonce, sealed, _data_key_associated_data(FORMAT_VERSION, mailbox_id, kek.key_id)
        )
    except InvalidTag:
        raise DecryptionFailed(
            f"data key of mailbox {mailbox_id!r} does not unwrap with key-encryption key "
            f"{kek.key_id!r} (wrong key, wrong mailbox or altered bytes)"
        ) from None
    return data_key


def seal(data_key: bytes, plaintext: bytes, *, associated_data: bytes) -> bytes:
    """Encrypt ``plaintext`` under ``data_key``, authenticating ``associated_data`` with it.

    Returns ``version || nonce || ciphertext || tag`` (``len(plaintext) + 29`` bytes). The same
    ``associated_data`` must be given to :func:`open_sealed`; it is not stored in the output.
    """
    _require_key_length(data_key, "data_key")
    nonce = os.urandom(NONCE_LENGTH)
    sealed = AESGCM(data_key).encrypt(
        nonce, plaintext, _record_associated_data(FORMAT_VERSION, associated_data)
    )
    return _VERSION_PREFIX + nonce + sealed


def open_sealed(data_key: bytes, sealed: bytes, *, associated_data: bytes) -> bytes:
    """Return the plaintext that :func:`seal` encrypted.

    Raises :class:`DecryptionFailed` when the format version is unknown, the bytes were
    altered, or ``data_key`` or ``associated_data`` differ from those used to seal.
    """
    _require_key_length(data_key, "data_key")
    _require_known_version(sealed, "sealed token record")
    if len(sealed) < 1 + NONCE_LENGTH + TAG_LENGTH:
        raise DecryptionFailed("sealed token record is truncated")
    nonce, body = sealed[1 : 1 + NONCE_LENGTH], sealed[1 + NONCE_LENGTH :]
    try:
        return AESGCM(data_key).decrypt(
            nonce, body, _record_associated_data(FORMAT_VERSION, associated_data)
        )
    except InvalidTag:
        raise DecryptionFailed(
            "sealed token record does not open (wrong data key, wrong associated data "
            "or altered bytes)"
        ) from None


def _data_key_associated_data(version: int, mailbox_id: str, key_id: str) -> bytes:
    return encode_fields(_DATA_KEY_PURPOSE, bytes([version]), mailbox_id, key_id)


def _record_associated_data(version: int, associated_data: bytes) -> bytes:
    return encode_fields(_RECORD_PURPOSE, bytes([version]), associated_data)


def _require_known_version(blob: bytes, what: str) -> None:
    if not blob:
        raise DecryptionFailed(f"{what} is empty")
    if blob[0] != FORMAT_VERSION:
        raise DecryptionFailed(f"{what} has unsupported format version {blob[0]}")


def _require_key_length(key: bytes, name: str) -> None:
    # A programming error, not a decryption failure: AES-GCM would silently accept 16 or 24
    # bytes (AES-128/192), and we promise AES-256.
    if len(key) != KEY_LENGTH:
        raise ValueError(f"{name} must be {KEY_LENGTH} bytes, got {len(key)}")
