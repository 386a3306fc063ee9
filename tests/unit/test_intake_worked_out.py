"""``intake._worked_out``: what the intake works out of submissions before the jobs'
transaction is the same whether it is worked out on the loop or beside it (a costly request's
digest and stored JSON are computed in the costly checks' lane)."""

from __future__ import annotations

import base64
import random
from typing import Any

import pytest

from mailbox_worker.jobs import intake
from mailbox_worker.jobs.intake import Submission
from mailbox_worker.jobs.message_json import dumps_message

from .test_mime_equivalence import random_payload


def submissions(seed: int) -> list[Submission]:
    rng = random.Random(seed)
    made = []
    for n in range(3):
        message: dict[str, Any] = random_payload(rng)
        message["attachments"] = [
            {
                "filename": "INV-1.pdf",
                "content_type": "application/pdf",
                "content_base64": base64.b64encode(rng.randbytes(300)).decode(),
            }
        ]
        body = {"mailbox_id": "mbx_" + "0" * 32, "mode": "send", "message": message}
        made.append(Submission(body, f"key-{n}", base64_checked=n % 2 == 0))
    return made


@pytest.mark.parametrize("seed", range(20))
async def test_the_lane_works_out_what_the_loop_does(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_the_loop = await intake._worked_out(submissions(seed))
    monkeypatch.setattr(intake, "ADDRESSES_ON_THE_LOOP", -1)  # every request costly
    beside = await intake._worked_out(submissions(seed))

    assert [each.digest for each in beside] == [each.digest for each in on_the_loop]
    assert all(each.payload_json is None and each.folded is None for each in on_the_loop)
    for submission, each in zip(submissions(seed), beside, strict=True):
        message = dict(submission.body["message"])
        assert each.payload_json == dumps_message(message, each.marked)
        assert isinstance(each.folded, dict)
