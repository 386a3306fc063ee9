"""Key material as stored text: base64 of the 32 bytes, checked on the way in."""

from __future__ import annotations

import base64
import binascii

from mailbox_worker.tokens.keys.port import KEY_ID_PATTERN, KEY_LENGTH, KeyEncryptionKey


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
