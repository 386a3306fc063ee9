"""``db.models.untracked``: a row's values as a model instance no session tracks, without the
constructor's per-column events (the claim's and the enqueue's Core rows)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import inspect

from mailbox_worker.clock import new_id
from mailbox_worker.db.models import Job, untracked

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def job_values() -> dict[str, object]:
    values: dict[str, object] = {column.name: None for column in Job.__table__.columns}
    values.update(
        id="job_1", state="running", attempts=2, run_after=NOW, created_at=NOW, updated_at=NOW
    )
    return values


def test_every_column_reads_back_as_given() -> None:
    values = job_values()
    job = untracked(Job, values)
    assert isinstance(job, Job)
    assert {name: getattr(job, name) for name in values} == values


def test_the_instance_is_transient_with_nothing_to_save() -> None:
    job = untracked(Job, job_values())
    state = inspect(job)
    assert state.transient
    assert not any(attribute.history.has_changes() for attribute in state.attrs)
    assert untracked(Job, job_values()) is not job  # a new instance each time


def test_it_reads_like_the_constructor() -> None:
    values = job_values()
    built = Job(**values)
    assert {name: getattr(untracked(Job, values), name) for name in values} == {
        name: getattr(built, name) for name in values
    }


def test_new_ids_keep_their_shape() -> None:
    made = {new_id("job") for _ in range(1000)}
    assert len(made) == 1000
    for each in made:
        prefix, _, digits = each.partition("_")
        assert prefix == "job"
        assert len(digits) == 32
        int(digits, 16)
