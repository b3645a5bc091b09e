"""SQLite, called inline on the event loop: the embedded default, one file and no set-up.

Inline rather than through a worker thread (aiosqlite), because the bot's statements are
indexed lookups on a local file that take microseconds, while every hop to a thread and back
costs tens of microseconds idle and far more when the loop is busy: the reservations
benchmark admits 703 jobs/s through aiosqlite and 2 640/s inline (docs/benchmarks.md).

Nothing here waits on the loop for long. The one wait that could be long, another process
holding the write lock, is taken off the loop: SQLite's busy timeout is 0, and a statement
that finds the database locked is retried after an asyncio sleep, for up to BUSY_TIMEOUT_MS.
Nor does SQLite's checkpoint (copying the log back into the database file): it runs on a
worker thread (storage.checkpoints), not inside whichever commit took the log past 1000 pages.

One connection, so statements from different coroutines must not interleave inside a
transaction: an asyncio lock makes a transaction exclusive for this Database, and plain
statements wait for it. BEGIN IMMEDIATE takes the write lock before the first read, which
keeps other processes (and other Database objects on the same file) out meanwhile.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

from storage.checkpoints import Checkpointer
from storage.database import Row, StorageError
from storage.sql import split_script, translate

BUSY_TIMEOUT_MS = 10_000
_FIRST_RETRY, _LONGEST_RETRY = 0.001, 0.05  # seconds between tries while the file is locked

T = TypeVar("T")

# Primary result codes that mean the database cannot be used now, rather than a bad query.
_UNAVAILABLE = {
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CORRUPT,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_NOTADB,
}


def _closed(error: sqlite3.Error) -> bool:
    """The connection was closed under us (a shutdown): the database is unavailable."""
    return isinstance(error, sqlite3.ProgrammingError) and "closed" in str(error)


def _primary_code(error: sqlite3.Error) -> int:
    return getattr(error, "sqlite_errorcode", 0) & 0xFF


class _Session:
    """Queries on the connection, for whoever holds the lock (the Database, or a transaction).

    `wait_when_locked`: outside a transaction a statement may find another process holding
    the write lock, and waits for it; inside one (after BEGIN IMMEDIATE) that cannot happen.
    """

    def __init__(self, conn: sqlite3.Connection, path: str, *, wait_when_locked: bool) -> None:
        self._conn = conn
        self._path = path
        self._wait_when_locked = wait_when_locked
        self.active = True

    async def _run(self, sql: str, args: tuple[Any, ...], read: Callable[[sqlite3.Cursor], T]) -> T:
        """Run one statement and `read` its result, both inside the error handling: rows
        are stepped lazily, so an error can surface while reading them."""
        if not self.active:
            raise RuntimeError("this transaction has ended: its connection cannot be used")
        statement = translate(sql)
        deadline = None  # from the first time the file is found locked
        pause = _FIRST_RETRY
        while True:
            try:
                return read(self._conn.execute(statement, args))
            except sqlite3.Error as error:
                code = _primary_code(error)
                locked = code == sqlite3.SQLITE_BUSY
                if deadline is None:
                    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
                if locked and self._wait_when_locked and time.monotonic() < deadline:
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, _LONGEST_RETRY)
                    continue
                if code in _UNAVAILABLE or _closed(error):
                    raise StorageError(f"SQLite database {self._path}: {error}") from error
                raise

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._run(sql, args, lambda cursor: max(cursor.rowcount, 0))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._run(sql, args, lambda cursor: [dict(row) for row in cursor])

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row = await self._run(sql, args, sqlite3.Cursor.fetchone)
        return dict(row) if row is not None else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self._run(sql, args, sqlite3.Cursor.fetchone)
        return row[0] if row is not None else None

    async def executescript(self, script: str) -> None:
        """A migration: several statements, inside the caller's transaction."""
        for statement in split_script(script):
            await self.execute(statement)


class SqliteDatabase:
    dialect: Literal["sqlite"] = "sqlite"

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self._conn = conn
        self._path = path
        self._session = _Session(conn, path, wait_when_locked=True)
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None  # the task inside a transaction
        self._checkpointer: Checkpointer | None = None

    @classmethod
    async def open(cls, path: str) -> SqliteDatabase:
        """Open (creating the file and its folder if needed) in WAL mode."""
        conn: sqlite3.Connection | None = None
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=0, isolation_level=None, cached_statements=256)
            conn.row_factory = sqlite3.Row
            database = cls(conn, path)
            # Switching to WAL may need a lock another process holds: waited for.
            mode = await database._session.fetchval("PRAGMA journal_mode=WAL")
            if mode not in ("wal", "memory"):
                # Without WAL a reader blocks commits, and commits here never wait on the loop.
                raise StorageError(f"the file system does not support WAL (journal mode {mode})")
            await database._session.execute("PRAGMA synchronous=NORMAL")  # durable with WAL
            await database._session.execute("PRAGMA foreign_keys=ON")
            if mode == "wal":
                await database._session.execute("PRAGMA wal_autocheckpoint=0")
                database._checkpointer = Checkpointer(
                    path,
                    writes=lambda: conn.total_changes,
                    fallback=lambda: conn.execute("PRAGMA wal_autocheckpoint=1000").close(),
                )
                database._checkpointer.start()
        except (OSError, sqlite3.Error, StorageError) as error:
            if conn is not None:
                conn.close()
            raise StorageError(f"cannot open SQLite database {path}: {error}") from error
        return database

    def _refuse_inside_own_transaction(self) -> None:
        if self._owner is not None and self._owner is asyncio.current_task():
            raise RuntimeError(
                "inside a transaction, use its connection: the database's own methods would "
                "wait for that transaction to end"
            )

    async def execute(self, sql: str, *args: Any) -> int:
        self._refuse_inside_own_transaction()
        async with self._lock:
            return await self._session.execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        self._refuse_inside_own_transaction()
        async with self._lock:
            return await self._session.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        self._refuse_inside_own_transaction()
        async with self._lock:
            return await self._session.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        self._refuse_inside_own_transaction()
        async with self._lock:
            return await self._session.fetchval(sql, *args)

    async def fetch_exclusive(self, sql: str, *args: Any) -> list[Row]:
        # One statement is atomic here: it holds the database's write lock while it writes,
        # and a statement whose snapshot went stale meanwhile fails busy and is retried.
        return await self.fetch(sql, *args)

    @asynccontextmanager
    async def transaction(self, *, exclusive: bool = False) -> AsyncIterator[_Session]:
        # Every transaction here is exclusive: BEGIN IMMEDIATE holds the write lock.
        self._refuse_inside_own_transaction()
        async with self._lock:
            self._owner = asyncio.current_task()
            session = _Session(self._conn, self._path, wait_when_locked=False)
            try:
                # Waits (off the loop) while another process writes; cancelled meanwhile,
                # nothing has been opened.
                await self._session.execute("BEGIN IMMEDIATE")
                yield session
                await session.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    try:
                        self._conn.rollback()
                    except sqlite3.Error:
                        # Left open, the transaction would swallow every later statement:
                        # close instead, so they fail loudly. The caller's error is raised.
                        self._conn.close()
                raise
            finally:
                session.active = False
                self._owner = None

    async def close(self) -> None:
        if self._checkpointer is not None:
            await self._checkpointer.stop()
        async with self._lock:
            self._conn.close()
