"""``verify_webhook`` accepts exactly the deliveries signed as docs/client.md describes.

Each expected signature is computed here with ``hmac`` from the format itself,
``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``, not with the client's code.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from mailbox_worker.client import WebhookVerificationError, verify_webhook

SECRET = "whsec-callbacks-secret"
NOW = 1_800_000_000
BODY = json.dumps({"type": "job.sent", "job": {"id": "job_1", "state": "sent"}}).encode()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    signed = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def header(timestamp: int, *signatures: str) -> str:
    return ",".join([f"t={timestamp}", *(f"v1={s}" for s in signatures)])


def test_a_genuine_delivery_returns_the_event() -> None:
    event = verify_webhook(SECRET, BODY, header(NOW, sign(SECRET, NOW, BODY)), now=NOW)
    assert event == {"type": "job.sent", "job": {"id": "job_1", "state": "sent"}}


def test_the_secret_may_be_given_as_bytes_and_spaces_after_commas_are_read() -> None:
    signature = f"t={NOW}, v1={sign(SECRET, NOW, BODY)}"
    assert verify_webhook(SECRET.encode(), BODY, signature, now=NOW)["type"] == "job.sent"


def test_a_tampered_body_is_refused() -> None:
    tampered = BODY.replace(b"job_1", b"job_2")
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify_webhook(SECRET, tampered, header(NOW, sign(SECRET, NOW, BODY)), now=NOW)


def test_a_changed_timestamp_is_refused_even_within_the_tolerance() -> None:
    # The timestamp is signed: moving it (to replay a delivery later) breaks the signature.
    signature = header(NOW + 10, sign(SECRET, NOW, BODY))
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify_webhook(SECRET, BODY, signature, now=NOW + 10)


def test_another_secret_is_refused() -> None:
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify_webhook(SECRET, BODY, header(NOW, sign("another-secret", NOW, BODY)), now=NOW)


@pytest.mark.parametrize("age", [301, -301, 86_400])
def test_a_timestamp_outside_the_tolerance_is_refused(age: int) -> None:
    signed_at = NOW - age
    signature = header(signed_at, sign(SECRET, signed_at, BODY))
    with pytest.raises(WebhookVerificationError, match="outside the tolerance"):
        verify_webhook(SECRET, BODY, signature, now=NOW)


@pytest.mark.parametrize("age", [300, -300, 0])
def test_a_timestamp_within_the_tolerance_is_accepted(age: int) -> None:
    signed_at = NOW - age
    signature = header(signed_at, sign(SECRET, signed_at, BODY))
    assert verify_webhook(SECRET, BODY, signature, now=NOW)["job"]["id"] == "job_1"


def test_the_tolerance_is_the_callers() -> None:
    signed_at = NOW - 60
    signature = header(signed_at, sign(SECRET, signed_at, BODY))
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, BODY, signature, tolerance=30, now=NOW)


def test_without_now_the_current_time_is_used() -> None:
    signed_at = 1_000_000_000  # September 2001
    old = header(signed_at, sign(SECRET, signed_at, BODY))
    with pytest.raises(WebhookVerificationError, match="outside the tolerance"):
        verify_webhook(SECRET, BODY, old)


def test_one_matching_signature_among_several_is_enough() -> None:
    # During a rotation the daemon signs with the old and the new secret.
    signature = header(NOW, sign("old-secret", NOW, BODY), sign(SECRET, NOW, BODY))
    assert verify_webhook(SECRET, BODY, signature, now=NOW)["type"] == "job.sent"
    signature = header(NOW, sign(SECRET, NOW, BODY), sign("new-secret", NOW, BODY))
    assert verify_webhook(SECRET, BODY, signature, now=NOW)["type"] == "job.sent"


def test_several_signatures_none_matching_are_refused() -> None:
    signature = header(NOW, sign("old-secret", NOW, BODY), sign("new-secret", NOW, BODY))
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, BODY, signature, now=NOW)


def test_an_unknown_scheme_beside_v1_is_skipped() -> None:
    signature = header(NOW, sign(SECRET, NOW, BODY)) + ",v2=whatever"
    assert verify_webhook(SECRET, BODY, signature, now=NOW)["type"] == "job.sent"


def test_an_uppercase_signature_is_not_the_format() -> None:
    signature = header(NOW, sign(SECRET, NOW, BODY).upper())
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, BODY, signature, now=NOW)


GOOD = sign(SECRET, NOW, BODY)


@pytest.mark.parametrize(
    "signature",
    [
        "",
        "garbage",
        f"v1={GOOD}",  # no timestamp
        f"t={NOW}",  # no signature
        f"t={NOW},v1=",  # an empty signature
        f"t=,v1={GOOD}",
        f"t=12.5,v1={GOOD}",
        f"t=-{NOW},v1={GOOD}",
        f"t=soon,v1={GOOD}",
        f"t={NOW},t={NOW},v1={GOOD}",  # two timestamps: which one was signed?
        f"t={NOW};v1={GOOD}",
        f"sha256={GOOD}",  # an older scheme
    ],
)
def test_a_malformed_header_is_refused(signature: str) -> None:
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, BODY, signature, now=NOW)


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"job.sent"'])
def test_a_signed_body_that_is_not_a_json_object_is_refused(body: bytes) -> None:
    with pytest.raises(WebhookVerificationError, match="JSON"):
        verify_webhook(SECRET, body, header(NOW, sign(SECRET, NOW, body)), now=NOW)
