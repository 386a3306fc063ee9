"""SQLite through aiosqlite with one trip to its thread per statement.

aiosqlite runs each connection's ``sqlite3`` calls on a thread of its own, and every call is a
trip there and back: the call queued, the thread woken, the answer handed back to the event
loop through its self-pipe. SQLAlchemy's adapter for it (``sqlalchemy.dialects.sqlite
.aiosqlite``) makes four such trips per statement (open a cursor, execute, fetch the rows,
close the cursor), plus one for each ``BEGIN IMMEDIATE``, commit and rollback, the pool's
rollback of every connection returned included. On the machine of docs/performance.md's
"Ninth pass" a trip cost about 80 µs of CPU, far more than SQLite takes to run most of our
statements, and an idle job took 83 of them.

This adapter keeps SQLAlchemy's dialect, its aiosqlite connection and everything else as they
are, and changes three things (21 trips per idle job):

* ``execute`` and ``executemany`` run the whole statement (cursor, execute, rows, close) in
  one function on the connection's thread, through ``aiosqlite.Connection._execute``, the
  queue aiosqlite's own methods use. The rows, description, row count and last row id come
  back together and are kept on the cursor, which is what SQLAlchemy reads after an execute;
* a transaction's ``BEGIN IMMEDIATE`` (SQLAlchemy's "begin" event, ``db/engine.py``) goes in
  the trip of its first statement;
* a commit or rollback of a transaction whose ``BEGIN IMMEDIATE`` never went sends nothing.

It is handed to SQLAlchemy as the dialect's DBAPI module (``create_async_engine(...,
module=...)``, the documented way to give a dialect another DBAPI); ``db/engine.py`` does so
for every SQLite engine. Server-side cursors (``stream()``, which nothing here uses on SQLite)
keep SQLAlchemy's own class; a transaction's ``BEGIN IMMEDIATE`` then goes in a trip of its
own before it. Tests: ``tests/integration/test_sqlite_driver.py``.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiosqlite
from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_connection, AsyncIODBAPIConnection
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util.concurrency import await_

BEGIN = "BEGIN IMMEDIATE"
"""How every transaction on SQLite begins (``db/engine.py``)."""

_Answer = tuple[Any, list[Any], int, int | None]
"""What one statement leaves: description, rows, row count, last row id."""


def _run(
    connection: sqlite3.Connection, operation: str, parameters: Any, many: bool, begin: bool
) -> _Answer:
    """The statement, on the connection's own thread, from cursor to close; ``begin``: the
    transaction's ``BEGIN IMMEDIATE`` first (``OneTripConnection.begin_immediate``)."""
    if begin:
        connection.execute(BEGIN)
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


def _on_thread(connection: aiosqlite.Connection, function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` on the connection's thread: one trip (aiosqlite's queue)."""
    send: Callable[..., Awaitable[Any]] = connection._execute
    return send(function, *args)


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """SQLAlchemy's aiosqlite cursor, each statement in one trip to the connection's thread
    (its results kept here; no aiosqlite cursor is opened)."""

    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_dbapi_connection) -> None:
        # Not the parent's: it opens an aiosqlite cursor (a trip) that this class never uses.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = {}  # type: ignore[assignment]
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    async def _async_soft_close(self) -> None:
        """Nothing to close: the statement's cursor was closed on the thread."""

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        try:
            return await_(self._run(operation, parameters, many=False))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        try:
            return await_(self._run(operation, seq_of_parameters, many=True))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    async def _run(self, operation: str, parameters: Any, *, many: bool) -> None:
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        adapted: OneTripConnection = self._adapt_connection  # type: ignore[assignment]
        async with adapted._execute_mutex:
            begin = adapted.take_begin()
            answer: _Answer = await _on_thread(
                connection, _run, connection._conn, operation, parameters, many, begin
            )
        self._description, rows, self._rowcount, self._lastrowid = answer
        self._rows = collections.deque(rows)


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's aiosqlite connection with ``OneTripCursor``, whose transactions cost no
    trip of their own to begin, nor to end when no statement ran in them."""

    __slots__ = ("_begin_pending", "_transaction_sent")
    _cursor_cls = OneTripCursor

    def __init__(self, dbapi: Any, connection: AsyncIODBAPIConnection) -> None:
        super().__init__(dbapi, connection)
        self._begin_pending = False
        """A ``BEGIN IMMEDIATE`` waits to go with the next statement."""
        self._transaction_sent = False
        """A ``BEGIN IMMEDIATE`` went, and no commit or rollback has ended it since."""

    def begin_immediate(self) -> None:
        """Begin a ``BEGIN IMMEDIATE`` transaction, sent with the next statement in its trip
        (SQLAlchemy's "begin" event, ``db/engine.py``). Nothing happens on the connection in
        between, so the write lock is taken at the same point of the work as before; a
        busy database's error comes from that statement instead of from the begin."""
        self._begin_pending = True

    def take_begin(self) -> bool:
        """Whether the next trip carries the pending ``BEGIN IMMEDIATE`` (then it counts as
        sent from here on, even if the trip is cancelled or fails: its end then still goes to
        the thread, queued behind it)."""
        begin, self._begin_pending = self._begin_pending, False
        self._transaction_sent = self._transaction_sent or begin
        return begin

    def cursor(self, server_side: bool = False) -> Any:
        if server_side and self._begin_pending:
            # SQLAlchemy's own cursor runs the statement; the transaction's begin goes first,
            # in a trip of its own.
            connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
            self.take_begin()
            try:
                await_(_on_thread(connection, connection._conn.execute, BEGIN))
            except Exception as error:
                self._handle_exception(error)
        return super().cursor(server_side)

    def commit(self) -> None:
        self._begin_pending = False
        if self._transaction_sent:
            super().commit()
            self._transaction_sent = False

    def rollback(self) -> None:
        # Also the pool's reset when a connection is returned, nearly always after a commit:
        # then nothing is open and nothing is sent.
        self._begin_pending = False
        if self._transaction_sent:
            super().rollback()
            self._transaction_sent = False


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """SQLAlchemy's aiosqlite DBAPI adapter, its connections with ``OneTripCursor``."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        adapted = super().connect(*arg, **kw)
        return OneTripConnection(self, adapted._connection)


def one_trip_dbapi() -> OneTripDBAPI:
    """The DBAPI module to give SQLAlchemy's aiosqlite dialect (``module=``)."""
    return OneTripDBAPI(aiosqlite, sqlite3)


__all__ = ["OneTripCursor", "OneTripDBAPI", "one_trip_dbapi"]
