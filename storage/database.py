"""The interface both drivers implement.

SQL is PostgreSQL-style with `$1` placeholders and runs unchanged on both (see storage.sql).
Rows are plain dicts by column name. Types are portable ones only: TEXT, BIGINT, INTEGER,
DOUBLE PRECISION; ids and times come from the application. Booleans are INTEGER 0/1 columns,
so they read back as ints on both databases (an expression such as `x > 1` reads back as an
int on SQLite and a bool on PostgreSQL: treat both as truthy). `SUM` over BIGINT is numeric
(a Decimal) on PostgreSQL: wrap it in `CAST(... AS BIGINT)`.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol

Row = dict[str, Any]


class StorageError(Exception):
    """The database is unavailable or misconfigured. Messages never carry a password."""


class Connection(Protocol):
    """What a query runs on: the database itself, or one transaction."""

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; the number of rows it changed (0 for DDL)."""
        ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """The first column of the first row, or None when there is no row."""
        ...


class Database(Connection, Protocol):
    @property
    def dialect(self) -> Literal["sqlite", "postgresql"]:
        """Which database this is: for `storage/` alone (migrations), never domain code."""
        ...

    async def fetch_exclusive(self, sql: str, *args: Any) -> list[Row]:
        """Run one statement that no other exclusive work runs beside, in any process
        sharing the database: for a read-then-write that must not race (the claim of the
        next job against the cap on jobs at the backend). `transaction(exclusive=True)`
        around one statement: one round trip on SQLite, whose write lock already serialises
        writing statements."""
        ...

    def transaction(self, *, exclusive: bool = False) -> AbstractAsyncContextManager[Connection]:
        """One transaction: committed when the block ends, rolled back if it raises.

        Writers are serialised: SQLite takes the database's write lock at once (BEGIN
        IMMEDIATE); on PostgreSQL callers lock rows with SELECT ... FOR UPDATE (dropped on
        SQLite, where it is not needed). Inside the block use only the yielded connection:
        the database's own methods raise there rather than deadlock or escape the transaction.

        `exclusive`: no other exclusive transaction or `fetch_exclusive` runs beside this one
        until it ends, in any process (SQLite's write lock already gives that; PostgreSQL
        takes an advisory lock first thing, before any row lock, and reads at READ COMMITTED
        so each statement sees what the previous holder committed).
        """
        ...

    async def close(self) -> None:
        """Close after any transaction under way has ended."""
        ...
