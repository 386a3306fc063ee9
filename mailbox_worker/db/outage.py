"""Which exceptions mean "the database cannot be reached", decided in one place.

The API answers them ``503 database_unavailable`` (with ``Retry-After``) rather than 500, and
the background loops back off and try again. They are SQLAlchemy's connection-level errors
(``OperationalError``, ``InterfaceError``, ``DisconnectionError``, a pool timeout, any DBAPI
error that invalidated its connection), asyncpg's connection errors and server shutdowns,
and an ``OSError`` raised from inside the driver (refused, reset or timed-out sockets).
"""

from __future__ import annotations

import traceback

import asyncpg
from sqlalchemy import exc

from mailbox_worker.errors import DatabaseUnavailable

SQLALCHEMY_UNREACHABLE: tuple[type[BaseException], ...] = (
    exc.OperationalError,
    exc.InterfaceError,
    exc.DisconnectionError,
    exc.TimeoutError,
)
ASYNCPG_UNREACHABLE: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
)
DRIVER_MODULES = ("sqlalchemy", "asyncpg", "aiosqlite")


def is_database_unavailable(error: BaseException) -> bool:
    """Whether ``error`` (or an exception that caused it) says the database is unreachable."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _unreachable(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def as_database_unavailable(error: BaseException) -> DatabaseUnavailable | None:
    """``DatabaseUnavailable`` for an unreachable database, else None (for translating)."""
    if not is_database_unavailable(error):
        return None
    return DatabaseUnavailable("the database cannot be reached; try again shortly")


def _unreachable(error: BaseException) -> bool:
    if isinstance(error, (DatabaseUnavailable, *SQLALCHEMY_UNREACHABLE, *ASYNCPG_UNREACHABLE)):
        return True
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    # An OSError counts only when the driver raised it: a file error elsewhere is not an outage.
    return isinstance(error, OSError) and _raised_in_driver(error)


def _raised_in_driver(error: BaseException) -> bool:
    for frame, _ in traceback.walk_tb(error.__traceback__):
        module = str(frame.f_globals.get("__name__", ""))
        if module.split(".", 1)[0] in DRIVER_MODULES:
            return True
    return False
