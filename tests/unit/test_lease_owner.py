"""A claim's lease owner: unique per claim, and always fits ``jobs.lease_owner``."""

from __future__ import annotations

from sqlalchemy import String

from mailbox_worker.db.models import Job
from mailbox_worker.jobs.claims import OWNER_LENGTH, lease_owner


def test_the_owner_width_is_the_column_width() -> None:
    column = Job.__table__.c.lease_owner.type
    assert isinstance(column, String) and column.length == OWNER_LENGTH


def test_every_claim_gets_its_own_owner_named_after_the_worker() -> None:
    owners = {lease_owner("host:42:abc123") for _ in range(1000)}
    assert len(owners) == 1000
    assert all(owner.startswith("host:42:abc123/") for owner in owners)


def test_a_long_worker_name_is_cut_but_the_suffix_kept() -> None:
    first, second = lease_owner("h" * 300), lease_owner("h" * 300)
    assert len(first) == len(second) == OWNER_LENGTH
    assert first != second
