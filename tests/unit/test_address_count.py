"""``parsing._addresses_in``: the count that sends a request's checks beside the loop. It counts
every address the document checks with its ``email`` format (but a mailbox's ``login_hint``),
whatever the body's shape, and never fails on a body the validator has not seen yet."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mailbox_worker.api.parsing import _addresses_in
from mailbox_worker.policy.slow_steps import ADDRESSES_ON_THE_LOOP


def _message(to: int = 1, cc: int = 0, bcc: int = 0, reply_to: int = 0) -> dict[str, Any]:
    def listed(count: int, name: str) -> list[dict[str, str]]:
        return [{"address": f"{name}{n}@fabrikam.example"} for n in range(count)]

    message: dict[str, Any] = {"to": listed(to, "to"), "subject": "Invoice"}
    for name, count in (("cc", cc), ("bcc", bcc), ("reply_to", reply_to)):
        if count:
            message[name] = listed(count, name)
    return message


def test_a_job_request_counts_its_lists_and_its_sender() -> None:
    body = {"mailbox_id": "mbx_1", "mode": "send", "message": _message(500, 500, 500, 500)}

    assert _addresses_in(body) == 2_001
    assert _addresses_in(body) > ADDRESSES_ON_THE_LOOP  # one request can pass the limit


def test_a_batch_counts_every_item() -> None:
    items = [{"message": _message(to=3, cc=2)}, {"message": _message(bcc=4)}]

    assert _addresses_in({"items": items}) == (1 + 5) + (1 + 5)


def test_a_batch_with_a_message_of_its_own_counts_both() -> None:
    """The validator refuses the stray message, but may walk it first."""
    body = {"items": [{"message": _message(to=7)}], "message": _message(to=9)}

    assert _addresses_in(body) == 8 + 10


def test_keys_written_with_escapes_are_the_same_keys_once_parsed() -> None:
    raw = json.dumps({"message": _message(to=5)}).replace('"to"', '"t\\u006f"')

    assert '"to"' not in raw
    assert _addresses_in(json.loads(raw)) == 6


@pytest.mark.parametrize(
    "body",
    [
        None,
        7,
        "text",
        [],
        [{"message": _message(to=3)}],
        {},
        {"items": "many"},
        {"items": [1, None, "x", []]},
        {"message": None},
        {"message": ["to"]},
        {"message": {"to": 5, "cc": None, "bcc": {"address": "a@b.example"}}},
    ],
)
def test_a_body_of_any_shape_is_counted_without_failing(body: Any) -> None:
    assert _addresses_in(body) in (0, 1)


def test_a_batch_of_more_items_than_the_limit_counts_them_unread() -> None:
    """Millions of empty items are not walked on the loop: their checks go beside it."""
    body = {"items": [0] * (ADDRESSES_ON_THE_LOOP * 1000)}

    assert _addresses_in(body) == ADDRESSES_ON_THE_LOOP * 1000


def test_the_count_stops_once_past_the_limit() -> None:
    items = [{"message": _message(to=500)}] * 100

    assert ADDRESSES_ON_THE_LOOP < _addresses_in({"items": items}) <= ADDRESSES_ON_THE_LOOP + 501


def test_a_list_of_anything_counts_its_length() -> None:
    """Errs on the side of counting: what the list holds is the validator's to refuse."""
    body = {"message": {"to": ["x"] * 2_500}}

    assert _addresses_in(body) == 2_501
