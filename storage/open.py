"""Open a database from its URL and bring its schema up to date."""

from __future__ import annotations

import re
import time
from pathlib import Path

from storage.database import Database, StorageError
from storage.postgres import PostgresDatabase
from storage.sqlite import SqliteDatabase, split_statements

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[\w-]+\.sql$")
_MIGRATION_LOCK = 7_351_001  # pg_advisory_xact_lock key: one migrator at a time


async def open_database(url: str, *, migrations_dir: Path = MIGRATIONS) -> Database:
    """`sqlite:///relative.db`, `sqlite:////absolute.db` or `postgresql://...`."""
    db: SqliteDatabase | PostgresDatabase
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        path = path[1:] if path.startswith("/") else path
        db = await SqliteDatabase.open(path or ":memory:")
    elif url.startswith(("postgresql://", "postgres://")):
        db = await PostgresDatabase.open(url)
    else:
        raise StorageError("DATABASE_URL must start with sqlite:// or postgresql://")
    try:
        await migrate(db, migrations_dir)
    except BaseException:
        await db.close()
        raise
    return db


def _migrations(directory: Path) -> list[tuple[int, str, Path]]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path.stem, path))
    return found


async def migrate(db: SqliteDatabase | PostgresDatabase, directory: Path) -> list[int]:
    """Apply each migration not yet recorded, each in its own transaction."""
    await db.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version INTEGER PRIMARY KEY, name TEXT NOT NULL,
               applied_at DOUBLE PRECISION NOT NULL)"""
    )
    applied = []
    for version, name, path in _migrations(directory):
        async with db.transaction() as conn:
            if db.dialect == "postgresql":
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            if await conn.fetchval("SELECT 1 FROM schema_migrations WHERE version = $1", version):
                continue
            for statement in split_statements(path.read_text()):
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                version,
                name,
                time.time(),
            )
        applied.append(version)
    return applied
