"""The pool sizing rule (docs/architecture.md#pool-sizing): what one process can hold at once
against ``database.pool_size + database.max_overflow``."""

from __future__ import annotations

import pytest

from mailbox_worker.db.engine import DatabaseSettings
from mailbox_worker.db.pool_sizing import pool_capacity, pool_demand, pool_shortfall

POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/mw"


def test_concurrency_8_with_every_loop_needs_19() -> None:
    demand = pool_demand(8, key_rotation=True, callbacks=True)
    assert (demand.jobs, demand.background, demand.api_reserve) == (8, 9, 2)
    assert demand.total == 19


@pytest.mark.parametrize(
    ("key_rotation", "callbacks", "total"),
    [(False, False, 18), (True, False, 20), (False, True, 19), (True, True, 21)],
)
def test_optional_loops_count_only_when_on(key_rotation: bool, callbacks: bool, total: int) -> None:
    assert pool_demand(10, key_rotation=key_rotation, callbacks=callbacks).total == total


def test_each_job_slot_adds_one_connection() -> None:
    small = pool_demand(1, key_rotation=True, callbacks=False)
    large = pool_demand(33, key_rotation=True, callbacks=False)
    assert large.total - small.total == 32


def test_the_pool_holds_its_size_plus_its_overflow() -> None:
    assert pool_capacity(DatabaseSettings(url=POSTGRES, pool_size=7, max_overflow=3)) == 10
    assert pool_capacity(DatabaseSettings(url=POSTGRES)) == 20


def test_sqlite_has_no_pool_to_check() -> None:
    settings = DatabaseSettings(url="sqlite+aiosqlite:///var/x.db", pool_size=1, max_overflow=0)
    assert pool_capacity(settings) is None
    assert pool_shortfall(settings, pool_demand(64, key_rotation=True, callbacks=True)) is None


def test_the_defaults_cover_the_default_concurrency() -> None:
    demand = pool_demand(8, key_rotation=True, callbacks=True)
    assert pool_shortfall(DatabaseSettings(url=POSTGRES), demand) is None


def test_a_pool_exactly_as_large_as_the_demand_is_enough() -> None:
    demand = pool_demand(8, key_rotation=True, callbacks=False)  # 18
    settings = DatabaseSettings(url=POSTGRES, pool_size=18, max_overflow=0)
    assert pool_shortfall(settings, demand) is None
    short = DatabaseSettings(url=POSTGRES, pool_size=17, max_overflow=0)
    assert pool_shortfall(short, demand) is not None


def test_the_warning_names_the_settings_and_the_numbers() -> None:
    demand = pool_demand(16, key_rotation=True, callbacks=False)  # 16 + 8 + 2 = 26
    warning = pool_shortfall(DatabaseSettings(url=POSTGRES, pool_size=5, max_overflow=5), demand)
    assert warning is not None
    for part in (
        "database.pool_size + database.max_overflow is 5 + 5 = 10",
        "can hold 26 at once",
        "worker.concurrency 16",
        "8 for background loops",
        "2 for API requests",
    ):
        assert part in warning
