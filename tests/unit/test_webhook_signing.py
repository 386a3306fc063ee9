"""Callback signatures: ``t=<unix>,v1=<hex HMAC of "t.body">``, checked within a tolerance."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from mailbox_worker.events.signing import TOLERANCE, Check, parse, sign, verify

SECRET = "whsec-current"
BODY = b'{"id":"evt_1","type":"job.sent","data":{"job_id":"job_1"}}'
SIGNED_AT = 1_765_000_000


def test_the_header_is_the_timestamp_and_the_hmac_of_timestamp_dot_body() -> None:
    header = sign(BODY, SIGNED_AT, SECRET)
    # Recomputed independently of the module, from the documented definition.
    expected = hmac.new(SECRET.encode(), b"1765000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1765000000,v1={expected}"


def test_a_fresh_signature_verifies_within_the_window_either_way() -> None:
    header = sign(BODY, SIGNED_AT, SECRET)
    for now in (SIGNED_AT, SIGNED_AT + TOLERANCE, SIGNED_AT - TOLERANCE):
        assert verify(header, BODY, SECRET, now=now) == Check.VALID


def test_a_tampered_body_does_not_verify() -> None:
    header = sign(BODY, SIGNED_AT, SECRET)
    tampered = BODY.replace(b"job.sent", b"job.failed")
    assert verify(header, tampered, SECRET, now=SIGNED_AT) == Check.MISMATCH


def test_a_changed_timestamp_does_not_verify() -> None:
    """The time is signed: moving ``t`` forward to pass the window breaks the MAC."""
    header = sign(BODY, SIGNED_AT, SECRET)
    moved = header.replace(f"t={SIGNED_AT}", f"t={SIGNED_AT + 3600}")
    assert verify(moved, BODY, SECRET, now=SIGNED_AT + 3600) == Check.MISMATCH


def test_the_wrong_secret_does_not_verify() -> None:
    header = sign(BODY, SIGNED_AT, SECRET)
    assert verify(header, BODY, "whsec-other", now=SIGNED_AT) == Check.MISMATCH


def test_an_old_signature_is_refused_as_a_replay() -> None:
    header = sign(BODY, SIGNED_AT, SECRET)
    later = SIGNED_AT + TOLERANCE + 1
    assert verify(header, BODY, SECRET, now=later) == Check.OUTSIDE_TOLERANCE


def test_a_signature_from_the_future_is_refused() -> None:
    header = sign(BODY, SIGNED_AT, SECRET)
    earlier = SIGNED_AT - TOLERANCE - 1
    assert verify(header, BODY, SECRET, now=earlier) == Check.OUTSIDE_TOLERANCE


def test_the_tolerance_can_be_narrowed_by_the_receiver() -> None:
    header = sign(BODY, SIGNED_AT, SECRET)
    assert verify(header, BODY, SECRET, now=SIGNED_AT + 61, tolerance=60) == (
        Check.OUTSIDE_TOLERANCE
    )
    assert verify(header, BODY, SECRET, now=SIGNED_AT + 60, tolerance=60) == Check.VALID


VALID_MAC = "a" * 64


@pytest.mark.parametrize(
    "header",
    [
        "",
        "sha256=" + VALID_MAC,  # the form of v0.1, no longer accepted
        f"v1={VALID_MAC}",  # no timestamp
        f"t={SIGNED_AT}",  # no MAC
        f"t=soon,v1={VALID_MAC}",
        f"t=-5,v1={VALID_MAC}",
        f"t={SIGNED_AT},t={SIGNED_AT},v1={VALID_MAC}",  # two timestamps
        f"t={SIGNED_AT},v1={VALID_MAC.upper()}",  # hex is lowercase
        f"t={SIGNED_AT},v1=abc",  # too short
        f"t={SIGNED_AT},v1",  # no value
    ],
)
def test_a_malformed_header_is_refused(header: str) -> None:
    assert parse(header) is None
    assert verify(header, BODY, SECRET, now=SIGNED_AT) == Check.MALFORMED


def test_several_v1_entries_verify_when_one_matches_for_secret_rotation() -> None:
    header = sign(BODY, SIGNED_AT, "whsec-old", SECRET)
    timestamp, macs = parse(header) or (0, [])
    assert (timestamp, len(macs)) == (SIGNED_AT, 2)
    assert verify(header, BODY, SECRET, now=SIGNED_AT) == Check.VALID
    assert verify(header, BODY, "whsec-old", now=SIGNED_AT) == Check.VALID
    assert verify(header, BODY, "whsec-unknown", now=SIGNED_AT) == Check.MISMATCH


def test_a_receiver_holding_several_secrets_accepts_any_of_them() -> None:
    header = sign(BODY, SIGNED_AT, SECRET)
    assert verify(header, BODY, "whsec-next", SECRET, now=SIGNED_AT) == Check.VALID


def test_entries_of_unknown_schemes_are_ignored() -> None:
    header = sign(BODY, SIGNED_AT, SECRET) + ",v2=anything"
    assert verify(header, BODY, SECRET, now=SIGNED_AT) == Check.VALID


def test_signing_needs_a_secret_and_a_unix_time() -> None:
    with pytest.raises(ValueError, match="at least one secret"):
        sign(BODY, SIGNED_AT)
    with pytest.raises(ValueError, match="never negative"):
        sign(BODY, -1, SECRET)
