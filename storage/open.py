"""Open a database from its URL and bring its schema up to date."""

from __future__ import annotations

from pathlib import Path

from storage.database import Database, StorageError
from storage.migrations import MIGRATIONS, migrate
from storage.postgres import PostgresDatabase
from storage.sqlite import SqliteDatabase


def sqlite_path(url: str) -> str:
    """`sqlite:///data/bot.db` → `data/bot.db` (relative), `sqlite:////srv/bot.db` → absolute,
    `sqlite://:memory:` → in memory (one connection's: for throwaway use only)."""
    rest = url.removeprefix("sqlite://")
    path = rest[1:] if rest.startswith("/") else rest
    if not path:
        raise StorageError("a SQLite URL needs a path, e.g. sqlite:///data/bot.db")
    return path


async def open_database(url: str, *, migrations_dir: Path = MIGRATIONS) -> Database:
    """Connect (creating a SQLite file and its folder on first run) and apply migrations.

    `sqlite:///...` or `postgresql://...` (`postgres://` too); anything unusable raises
    StorageError, whose message never holds the password.
    """
    db: SqliteDatabase | PostgresDatabase
    if url.startswith("sqlite://"):
        db = await SqliteDatabase.open(sqlite_path(url))
    elif url.startswith(("postgresql://", "postgres://")):
        db = await PostgresDatabase.open(url)
    else:
        scheme = url.split("://", 1)[0] if "://" in url else "no scheme"
        raise StorageError(f"database URL ({scheme}) must start with sqlite:// or postgresql://")
    try:
        await migrate(db, migrations_dir)
    except BaseException:
        await db.close()
        raise
    return db
