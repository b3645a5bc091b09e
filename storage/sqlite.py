"""SQLite through aiosqlite: one connection, statements serialised by a lock, WAL mode."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import aiosqlite

from storage.database import Connection, Row, StorageError

# `$12` outside string literals → `?12` (sqlite3 numbers its parameters the same way).
_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\$(\d+)")


def translate(sql: str) -> str:
    return _PLACEHOLDER.sub(lambda m: f"?{m.group(1)}" if m.group(1) else m.group(0), sql)


class _Queries:
    """Query methods over one aiosqlite connection; the caller holds the lock."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def _execute(self, sql: str, args: tuple[Any, ...]) -> sqlite3.Cursor:
        return await self._conn.execute(translate(sql), args)

    async def execute(self, sql: str, *args: Any) -> int:
        cursor = await self._execute(sql, args)
        return cursor.rowcount

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        cursor = await self._execute(sql, args)
        rows = await cursor.fetchall()
        return [dict(row) for row in rows]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        cursor = await self._execute(sql, args)
        row = await cursor.fetchone()
        return dict(row) if row is not None else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return next(iter(row.values())) if row else None


class SqliteDatabase:
    dialect: Literal["sqlite"] = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._queries = _Queries(conn)
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> SqliteDatabase:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as error:
            raise StorageError(f"cannot open SQLite database {path}: {error}") from None
        conn.row_factory = sqlite3.Row
        for pragma in (
            "journal_mode=WAL",
            "busy_timeout=10000",
            "foreign_keys=ON",
            "synchronous=NORMAL",
        ):
            await conn.execute(f"PRAGMA {pragma}")
        return cls(conn)

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._lock:
            return await self._queries.execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._lock:
            return await self._queries.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self._lock:
            return await self._queries.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self._lock:
            return await self._queries.fetchval(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._queries
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    async def close(self) -> None:
        await self._conn.close()


def split_statements(script: str) -> list[str]:
    """Split a migration on `;` at line ends, dropping `--` comments."""
    lines = [line.split("--", 1)[0].rstrip() for line in script.splitlines()]
    text = "\n".join(lines)
    return [s.strip() for s in re.split(r";\s*(?:\n|$)", text) if s.strip()]
