"""Envelope encryption: round trips, and every kind of mismatch fails closed."""

from __future__ import annotations

import base64

import pytest

from mailbox_worker.errors import DecryptionFailed
from mailbox_worker.tokens.envelope import (
    FORMAT_VERSION,
    encode_fields,
    new_data_key,
    open_sealed,
    seal,
    unwrap_data_key,
    wrap_data_key,
)
from mailbox_worker.tokens.keys.port import KeyEncryptionKey

MAILBOX = "mbx-0001"
RECORD_AD = encode_fields("mbx-0001", "refresh_token")


@pytest.fixture
def kek() -> KeyEncryptionKey:
    return KeyEncryptionKey("kek-20250101-0a0b0c0d", bytes(range(32)))


def flip(blob: bytes, index: int) -> bytes:
    altered = bytearray(blob)
    altered[index] ^= 0x01
    return bytes(altered)


def assert_reveals_no_secret(error: DecryptionFailed, *secrets: bytes) -> None:
    text = str(error)
    for secret in secrets:
        assert secret.hex() not in text
        assert base64.b64encode(secret).decode() not in text


def test_new_data_key_is_32_fresh_random_bytes() -> None:
    first, second = new_data_key(), new_data_key()
    assert len(first) == 32
    assert first != second


def test_wrapped_data_key_round_trips(kek: KeyEncryptionKey) -> None:
    data_key = new_data_key()
    wrapped = wrap_data_key(kek, data_key, mailbox_id=MAILBOX)
    assert unwrap_data_key(kek, wrapped, mailbox_id=MAILBOX) == data_key


def test_wrapped_data_key_layout_is_version_nonce_ciphertext_tag(kek: KeyEncryptionKey) -> None:
    data_key = new_data_key()
    wrapped = wrap_data_key(kek, data_key, mailbox_id=MAILBOX)
    assert len(wrapped) == 1 + 12 + 32 + 16
    assert wrapped[0] == FORMAT_VERSION
    assert data_key not in wrapped


def test_each_wrap_uses_a_fresh_nonce(kek: KeyEncryptionKey) -> None:
    data_key = new_data_key()
    first = wrap_data_key(kek, data_key, mailbox_id=MAILBOX)
    second = wrap_data_key(kek, data_key, mailbox_id=MAILBOX)
    assert first[1:13] != second[1:13]


@pytest.mark.parametrize(
    "index", [1, 12, 13, 44, 45, 60], ids=["nonce", "nonce-end", "ct", "ct-end", "tag", "tag-end"]
)
def test_an_altered_wrapped_key_does_not_unwrap(kek: KeyEncryptionKey, index: int) -> None:
    wrapped = wrap_data_key(kek, new_data_key(), mailbox_id=MAILBOX)
    with pytest.raises(DecryptionFailed, match=MAILBOX):
        unwrap_data_key(kek, flip(wrapped, index), mailbox_id=MAILBOX)


def test_a_wrapped_key_moved_to_another_mailbox_does_not_unwrap(kek: KeyEncryptionKey) -> None:
    data_key = new_data_key()
    wrapped = wrap_data_key(kek, data_key, mailbox_id=MAILBOX)
    with pytest.raises(DecryptionFailed, match="mbx-0002") as caught:
        unwrap_data_key(kek, wrapped, mailbox_id="mbx-0002")
    assert_reveals_no_secret(caught.value, kek.material, data_key)


def test_a_wrapped_key_does_not_unwrap_with_another_kek(kek: KeyEncryptionKey) -> None:
    data_key = new_data_key()
    wrapped = wrap_data_key(kek, data_key, mailbox_id=MAILBOX)
    other = KeyEncryptionKey(kek.key_id, bytes(32))
    with pytest.raises(DecryptionFailed) as caught:
        unwrap_data_key(other, wrapped, mailbox_id=MAILBOX)
    assert_reveals_no_secret(caught.value, kek.material, other.material, data_key)


def test_a_relabelled_kek_does_not_unwrap(kek: KeyEncryptionKey) -> None:
    wrapped = wrap_data_key(kek, new_data_key(), mailbox_id=MAILBOX)
    relabelled = KeyEncryptionKey("kek-20250101-ffffffff", kek.material)
    with pytest.raises(DecryptionFailed, match="kek-20250101-ffffffff"):
        unwrap_data_key(relabelled, wrapped, mailbox_id=MAILBOX)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_an_unknown_wrapped_key_version_is_rejected(kek: KeyEncryptionKey, version: int) -> None:
    wrapped = wrap_data_key(kek, new_data_key(), mailbox_id=MAILBOX)
    with pytest.raises(DecryptionFailed, match=f"unsupported format version {version}"):
        unwrap_data_key(kek, bytes([version]) + wrapped[1:], mailbox_id=MAILBOX)


@pytest.mark.parametrize("length", [0, 1, 13, 60, 62])
def test_a_wrapped_key_of_the_wrong_length_is_rejected(kek: KeyEncryptionKey, length: int) -> None:
    wrapped = wrap_data_key(kek, new_data_key(), mailbox_id=MAILBOX)
    blob = (wrapped + b"\x00")[:length]
    with pytest.raises(DecryptionFailed, match=MAILBOX):
        unwrap_data_key(kek, blob, mailbox_id=MAILBOX)


def test_wrap_refuses_a_data_key_that_is_not_256_bits(kek: KeyEncryptionKey) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        wrap_data_key(kek, bytes(16), mailbox_id=MAILBOX)


@pytest.mark.parametrize("plaintext", [b"", b"1//0refresh-token", bytes(5000)])
def test_sealed_record_round_trips(plaintext: bytes) -> None:
    data_key = new_data_key()
    sealed = seal(data_key, plaintext, associated_data=RECORD_AD)
    assert len(sealed) == 1 + 12 + len(plaintext) + 16
    assert sealed[0] == FORMAT_VERSION
    assert open_sealed(data_key, sealed, associated_data=RECORD_AD) == plaintext


def test_sealed_record_hides_the_plaintext() -> None:
    plaintext = b"1//0refresh-token-value"
    sealed = seal(new_data_key(), plaintext, associated_data=RECORD_AD)
    assert plaintext not in sealed


@pytest.mark.parametrize("index", [1, 13, -16, -1], ids=["nonce", "ciphertext", "tag", "tag-end"])
def test_an_altered_sealed_record_does_not_open(index: int) -> None:
    data_key = new_data_key()
    sealed = seal(data_key, b"secret-token", associated_data=RECORD_AD)
    with pytest.raises(DecryptionFailed, match="does not open"):
        open_sealed(data_key, flip(sealed, index), associated_data=RECORD_AD)


def test_a_sealed_record_does_not_open_with_other_associated_data() -> None:
    data_key = new_data_key()
    sealed = seal(data_key, b"secret-token", associated_data=RECORD_AD)
    with pytest.raises(DecryptionFailed):
        open_sealed(data_key, sealed, associated_data=encode_fields("mbx-0002", "refresh_token"))


def test_a_sealed_record_does_not_open_with_another_data_key() -> None:
    data_key, other = new_data_key(), new_data_key()
    sealed = seal(data_key, b"secret-token", associated_data=RECORD_AD)
    with pytest.raises(DecryptionFailed) as caught:
        open_sealed(other, sealed, associated_data=RECORD_AD)
    assert_reveals_no_secret(caught.value, data_key, other, b"secret-token")
    assert "secret-token" not in str(caught.value)


@pytest.mark.parametrize("version", [0, 2])
def test_an_unknown_sealed_record_version_is_rejected(version: int) -> None:
    data_key = new_data_key()
    sealed = seal(data_key, b"secret-token", associated_data=RECORD_AD)
    with pytest.raises(DecryptionFailed, match="unsupported format version"):
        open_sealed(data_key, bytes([version]) + sealed[1:], associated_data=RECORD_AD)


@pytest.mark.parametrize("blob", [b"", b"\x01", bytes([1]) + bytes(27)])
def test_an_empty_or_truncated_sealed_record_is_rejected(blob: bytes) -> None:
    with pytest.raises(DecryptionFailed):
        open_sealed(new_data_key(), blob, associated_data=RECORD_AD)


def test_seal_refuses_a_key_that_is_not_256_bits() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        seal(bytes(16), b"x", associated_data=RECORD_AD)


def test_a_wrapped_key_does_not_open_as_a_sealed_record(kek: KeyEncryptionKey) -> None:
    wrapped = wrap_data_key(kek, new_data_key(), mailbox_id=MAILBOX)
    with pytest.raises(DecryptionFailed):
        open_sealed(kek.material, wrapped, associated_data=encode_fields(MAILBOX))


def test_encode_fields_is_unambiguous() -> None:
    assert encode_fields("ab", "c") != encode_fields("a", "bc")
    assert encode_fields("a", "") != encode_fields("a")
    assert encode_fields("é") == encode_fields("é".encode())
