"""Numbered SQL files (`migrations/0001_initial.sql`, ...) applied in order, each once.

Each migration runs in its own transaction and is recorded in `schema_migrations`. Two
processes starting at once must not both apply one: each transaction first takes a lock
(SQLite: BEGIN IMMEDIATE holds the database; PostgreSQL: an advisory lock), then re-checks.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from storage.database import Connection, StorageError
from storage.postgres import PostgresDatabase
from storage.sqlite import SqliteDatabase

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
_NAME = re.compile(r"^(\d+)_\w[\w-]*\.sql$")
_LOCK_KEY = 7_351_001  # pg_advisory_xact_lock key: one migrator at a time

_CREATE_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def discover(directory: Path) -> list[Migration]:
    """The folder's migrations by version; a misnamed or duplicate file is an error, not skipped."""
    if not directory.is_dir():
        raise StorageError(f"no migrations folder at {directory}")
    found: dict[int, Migration] = {}
    for path in directory.glob("*.sql"):
        match = _NAME.match(path.name)
        if not match:
            raise StorageError(f"migration {path.name} is not named like 0001_what.sql")
        version = int(match[1])
        if version in found:
            other = found[version].path.name
            raise StorageError(f"migrations {other} and {path.name} share a number")
        found[version] = Migration(version, path.stem, path)
    return [found[version] for version in sorted(found)]


async def _one_migrator_at_a_time(conn: Connection, dialect: str) -> None:
    if dialect == "postgresql":  # SQLite's BEGIN IMMEDIATE already holds the database
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)


async def migrate(db: SqliteDatabase | PostgresDatabase, directory: Path) -> None:
    """Apply the migrations not yet recorded, in order."""
    migrations = discover(directory)
    async with db.transaction() as conn:
        # Under the lock too: CREATE TABLE IF NOT EXISTS can race with itself on PostgreSQL.
        await _one_migrator_at_a_time(conn, db.dialect)
        await conn.execute(_CREATE_TABLE)
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
    for migration in migrations:
        if migration.version in done:
            continue
        async with db.transaction() as conn:
            await _one_migrator_at_a_time(conn, db.dialect)
            if await conn.fetchval(
                "SELECT 1 FROM schema_migrations WHERE version = $1", migration.version
            ):
                continue  # another process applied it meanwhile
            try:
                await conn.executescript(migration.path.read_text())
            except StorageError:
                raise
            except Exception as error:
                raise StorageError(f"migration {migration.path.name} failed: {error}") from error
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                time.time(),
            )
        log.info("applied migration %s", migration.name)
