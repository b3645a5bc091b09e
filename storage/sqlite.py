"""SQLite through aiosqlite: the embedded default, one file and no set-up.

One connection, so statements from different coroutines must not interleave inside a
transaction: an asyncio lock makes a transaction exclusive for this Database, and plain
statements wait for it. Other processes on the same file are kept out by BEGIN IMMEDIATE
(the write lock is taken before the first read) and wait up to BUSY_TIMEOUT_MS for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite

from storage.database import Row, StorageError
from storage.sql import split_script, translate

BUSY_TIMEOUT_MS = 10_000

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

T = TypeVar("T")


class _Session:
    """Queries on the connection, for whoever holds the lock (the Database, or a transaction)."""

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        self._conn = conn
        self._path = path
        self.active = True

    async def _call(self, method: Callable[[str, Any], Awaitable[T]], sql: str, args: Any) -> T:
        if not self.active:
            raise RuntimeError("this transaction has ended: its connection cannot be used")
        try:
            return await method(translate(sql), args)
        except sqlite3.Error as error:
            if getattr(error, "sqlite_errorcode", 0) & 0xFF in _UNAVAILABLE:
                raise StorageError(f"SQLite database {self._path}: {error}") from error
            raise

    async def execute(self, sql: str, *args: Any) -> int:
        cursor = await self._call(self._conn.execute, sql, args)
        return max(cursor.rowcount, 0)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [dict(row) for row in await self._call(self._conn.execute_fetchall, sql, args)]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self._call(self._conn.execute_fetchall, sql, args)
        return dict(rows[0]) if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        rows = await self._call(self._conn.execute_fetchall, sql, args)
        return rows[0][0] if rows else None

    async def executescript(self, script: str) -> None:
        """A migration: several statements, inside the caller's transaction."""
        for statement in split_script(script):
            await self.execute(statement)


class SqliteDatabase:
    dialect: Literal["sqlite"] = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        self._conn = conn
        self._path = path
        self._session = _Session(conn, path)
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None  # the task inside a transaction

    @classmethod
    async def open(cls, path: str) -> SqliteDatabase:
        """Open (creating the file and its folder if needed) in WAL mode."""
        conn: aiosqlite.Connection | None = None
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = await aiosqlite.connect(path, isolation_level=None, cached_statements=256)
            conn.row_factory = sqlite3.Row
            # busy_timeout first: switching to WAL needs a lock another process may hold.
            for pragma in (
                f"busy_timeout={BUSY_TIMEOUT_MS}",
                "journal_mode=WAL",
                "synchronous=NORMAL",  # WAL + NORMAL: durable across crashes of the process
                "foreign_keys=ON",
            ):
                await conn.execute(f"PRAGMA {pragma}")
        except (OSError, sqlite3.Error) as error:
            if conn is not None:
                await conn.close()
            raise StorageError(f"cannot open SQLite database {path}: {error}") from error
        return cls(conn, path)

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

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Session]:
        self._refuse_inside_own_transaction()
        async with self._lock:
            self._owner = asyncio.current_task()
            session = _Session(self._conn, self._path)
            try:
                await session.execute("BEGIN IMMEDIATE")
                yield session
                await session.execute("COMMIT")
            except BaseException:
                # Also on cancellation: a BEGIN or COMMIT already queued still runs, and this
                # rollback runs after it (aiosqlite keeps order), before anyone else's statement.
                # With nothing open, sqlite3's rollback() does nothing.
                with contextlib.suppress(Exception):  # the caller's error is the one to see
                    await self._conn.rollback()
                raise
            finally:
                session.active = False
                self._owner = None

    async def close(self) -> None:
        async with self._lock:
            await self._conn.close()
