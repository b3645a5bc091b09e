"""PostgreSQL through an asyncpg pool: several bot processes can share one database."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar
from urllib.parse import unquote, urlsplit

import asyncpg

from storage.database import Row, StorageError

# Errors meaning the server cannot be used now (connection lost, shutting down, out of
# resources, a transaction it rolled back to break a deadlock or a serialization conflict),
# rather than a bad query: these become StorageError, which callers wait out and retry.
_UNAVAILABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.TransactionRollbackError,
)

# The advisory lock key exclusive transactions hold (any constant; no other lock uses it).
_EXCLUSIVE_LOCK = 0x5D1A_C1A1
_BEGIN = "BEGIN ISOLATION LEVEL READ COMMITTED"
_BEGIN_EXCLUSIVE = f"{_BEGIN}; SELECT pg_advisory_xact_lock({_EXCLUSIVE_LOCK})"

_PASSWORD = re.compile(r"://[^:/@]*:([^@]*)@")

T = TypeVar("T")


async def _guard(awaitable: Awaitable[T]) -> T:
    try:
        return await awaitable
    except _UNAVAILABLE as error:
        raise StorageError(f"PostgreSQL is unavailable: {error}") from error


class _Session:
    """Queries on the pool (one connection per query) or on one transaction's connection."""

    def __init__(self, conn: asyncpg.Pool | asyncpg.Connection) -> None:
        self._conn = conn
        self._lost = False

    def on_lost(self, _conn: object) -> None:
        """asyncpg's termination listener: the transaction's connection has closed."""
        self._lost = True

    async def call(self, method: Callable[..., Awaitable[T]], *args: Any) -> T:
        try:
            return await _guard(method(*args))
        except (asyncpg.InterfaceError, asyncpg.InternalClientError) as error:
            if self._lost:  # asyncpg's own wording here is about misuse, not a lost server
                raise StorageError(
                    f"PostgreSQL is unavailable: connection lost ({error})"
                ) from error
            raise

    async def execute(self, sql: str, *args: Any) -> int:
        status = await self.call(self._conn.execute, sql, *args)
        # "INSERT 0 3", "UPDATE 2", "DELETE 1": the last word is the row count.
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [dict(row) for row in await self.call(self._conn.fetch, sql, *args)]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row = await self.call(self._conn.fetchrow, sql, *args)
        return dict(row) if row is not None else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.call(self._conn.fetchval, sql, *args)

    async def executescript(self, script: str) -> None:
        """A migration: without arguments asyncpg sends it whole, as several statements."""
        await self.call(self._conn.execute, script)


def _where(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        parts = urlsplit(url)
        user = f"{parts.username}@" if parts.username else ""
        return f"{user}{parts.hostname or ''}:{parts.port or 5432}{parts.path}"
    except ValueError:
        return "the configured URL"


class _NoSessionState(asyncpg.Connection):
    """A connection that goes back to the pool without asyncpg's reset query.

    The bot leaves no session state behind: no SET, LISTEN, cursor or session-level advisory
    lock (an exclusive transaction's lock ends with it). So the reset query asyncpg
    sends on every release (`RESET ALL`, `UNLISTEN *`...; one round trip in five, measured
    by bench/takeover.py) is skipped; an open transaction is still rolled back.
    """

    def get_reset_query(self) -> str:
        return ""


class PostgresDatabase:
    dialect: Literal["postgresql"] = "postgresql"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._session = _Session(pool)
        self._in_transaction: set[asyncio.Task[Any]] = set()

    @classmethod
    async def open(cls, url: str) -> PostgresDatabase:
        try:
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=10, timeout=10, connection_class=_NoSessionState
            )
        except Exception as error:
            message = _hide_password(f"{type(error).__name__}: {error}", url)
            raise StorageError(
                f"cannot connect to PostgreSQL at {_where(url)}: {message}"
            ) from None  # the cause may hold the URL, password included
        return cls(pool)

    def _refuse_inside_own_transaction(self) -> None:
        if self._in_transaction and asyncio.current_task() in self._in_transaction:
            raise RuntimeError(
                "inside a transaction, use its connection: the database's own methods would "
                "run outside it (and could wait for its own row locks)"
            )

    async def execute(self, sql: str, *args: Any) -> int:
        self._refuse_inside_own_transaction()
        return await self._session.execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        self._refuse_inside_own_transaction()
        return await self._session.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        self._refuse_inside_own_transaction()
        return await self._session.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        self._refuse_inside_own_transaction()
        return await self._session.fetchval(sql, *args)

    async def fetch_exclusive(self, sql: str, *args: Any) -> list[Row]:
        async with self.transaction(exclusive=True) as session:
            return await session.fetch(sql, *args)

    @asynccontextmanager
    async def transaction(self, *, exclusive: bool = False) -> AsyncIterator[_Session]:
        """See `Database.transaction`. READ COMMITTED whatever the server's default: the
        bot's transactions are written for it (row locks), and an exclusive one's lock is
        taken before its statements' snapshots, so they see every change committed by the
        previous holder. BEGIN and that lock go in one round trip (one simple query)."""
        self._refuse_inside_own_transaction()
        task = asyncio.current_task()
        assert task is not None
        self._in_transaction.add(task)
        try:
            async with contextlib.AsyncExitStack() as stack:
                conn = await _guard(stack.enter_async_context(self._pool.acquire()))
                session = _Session(conn)
                conn.add_termination_listener(session.on_lost)
                stack.callback(_stop_listening, conn, session)
                try:
                    await session.call(conn.execute, _BEGIN_EXCLUSIVE if exclusive else _BEGIN)
                    yield session
                except BaseException:
                    # If this fails too (a lost connection: the server has rolled back), the
                    # caller's error is the one to see; the pool resets or drops the connection.
                    with contextlib.suppress(Exception):
                        await conn.execute("ROLLBACK")
                    raise
                if await session.call(conn.execute, "COMMIT") == "ROLLBACK":
                    # PostgreSQL rolls back a transaction one of whose statements failed,
                    # even if the caller caught that error: never let it pass as committed.
                    raise StorageError(
                        "PostgreSQL rolled the transaction back: a statement in it failed"
                    )
        finally:
            self._in_transaction.discard(task)

    async def close(self) -> None:
        await self._pool.close()


def _hide_password(message: str, url: str) -> str:
    match = _PASSWORD.search(url)
    if match and match[1]:
        for secret in (match[1], unquote(match[1])):
            message = message.replace(secret, "***")
    return message


def _stop_listening(conn: asyncpg.Connection, session: _Session) -> None:
    """Before the connection goes back to the pool; a lost one is detached from it already."""
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.remove_termination_listener(session.on_lost)
