"""The interface both drivers implement."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol

Row = Mapping[str, Any]


class StorageError(Exception):
    """The database is unavailable or misconfigured. Messages never carry a password."""


class Connection(Protocol):
    """What a query runs on: the database itself, or one transaction."""

    async def execute(self, sql: str, *args: Any) -> int: ...
    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...
    async def fetchval(self, sql: str, *args: Any) -> Any: ...


class Database(Connection, Protocol):
    dialect: Literal["sqlite", "postgresql"]

    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        """One transaction that serialises writers: SQLite takes the write lock at once
        (BEGIN IMMEDIATE); on PostgreSQL callers lock rows with SELECT ... FOR UPDATE."""
        ...

    async def close(self) -> None: ...
