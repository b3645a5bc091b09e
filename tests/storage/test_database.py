"""The storage layer behaves the same on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from storage import StorageError, open_database


def write_migrations(directory: Path, *scripts: str) -> None:
    directory.mkdir(exist_ok=True)
    for number, script in enumerate(scripts, start=1):
        (directory / f"{number:04d}_step{number}.sql").write_text(script)


ACCOUNT = """-- an account with a little credit
CREATE TABLE account (id INTEGER PRIMARY KEY, used BIGINT NOT NULL, note TEXT);
INSERT INTO account (id, used) VALUES (1, 0);
"""


async def test_migrations_apply_in_order_once_and_later_ones_on_next_open(database_url, tmp_path):
    migrations = tmp_path / "migrations"
    write_migrations(migrations, ACCOUNT)
    db = await open_database(database_url, migrations_dir=migrations)
    await db.close()
    db = await open_database(database_url, migrations_dir=migrations)  # nothing new
    assert await db.fetchval("SELECT COUNT(*) FROM account") == 1
    await db.close()
    write_migrations(migrations, ACCOUNT, "ALTER TABLE account ADD COLUMN extra TEXT;")
    db = await open_database(database_url, migrations_dir=migrations)
    versions = [
        r["version"]
        for r in await db.fetch("SELECT version FROM schema_migrations ORDER BY version")
    ]
    assert versions == [1, 2]
    await db.execute("UPDATE account SET extra = $1", "ok")
    assert await db.fetchval("SELECT extra FROM account") == "ok"
    await db.close()


async def test_values_round_trip_with_numbered_placeholders(database_url, tmp_path):
    write_migrations(
        tmp_path / "m", "CREATE TABLE t (id BIGINT PRIMARY KEY, x DOUBLE PRECISION, s TEXT);"
    )
    db = await open_database(database_url, migrations_dir=tmp_path / "m")
    snowflake = 1234567890123456789
    assert (
        await db.execute("INSERT INTO t (id, x, s) VALUES ($1, $2, $3)", snowflake, 0.25, None) == 1
    )
    row = await db.fetchrow(
        "SELECT * FROM t WHERE id = $1 AND (s IS NULL OR s = $2)", snowflake, "x"
    )
    assert dict(row) == {"id": snowflake, "x": 0.25, "s": None}
    assert await db.fetchval("SELECT $1 || '$1' || $1", "a") == "a$1a"
    assert await db.fetchrow("SELECT * FROM t WHERE id = $1", 1) is None
    await db.close()


async def test_a_transaction_commits_or_rolls_back_as_a_whole(database_url, tmp_path):
    write_migrations(tmp_path / "m", ACCOUNT)
    db = await open_database(database_url, migrations_dir=tmp_path / "m")
    async with db.transaction() as conn:
        await conn.execute("UPDATE account SET used = 1")
    with pytest.raises(RuntimeError):
        async with db.transaction() as conn:
            await conn.execute("UPDATE account SET used = 99")
            raise RuntimeError("boom")
    assert await db.fetchval("SELECT used FROM account") == 1
    await db.close()


async def reserve(db) -> bool:
    """The reservation pattern the ledger uses: lock, check, update."""
    suffix = " FOR UPDATE" if db.dialect == "postgresql" else ""
    async with db.transaction() as conn:
        used = await conn.fetchval("SELECT used FROM account WHERE id = 1" + suffix)
        if used >= 5:
            return False
        await conn.execute("UPDATE account SET used = $1 WHERE id = 1", used + 1)
        return True


async def test_a_hundred_racing_reservations_for_five_places_get_exactly_five(
    database_url, tmp_path
):
    write_migrations(tmp_path / "m", ACCOUNT)
    db = await open_database(database_url, migrations_dir=tmp_path / "m")
    results = await asyncio.gather(*(reserve(db) for _ in range(100)))
    assert sum(results) == 5
    await db.close()


async def test_the_race_holds_across_two_connections_standing_for_two_processes(
    database_url, tmp_path
):
    write_migrations(tmp_path / "m", ACCOUNT)
    first = await open_database(database_url, migrations_dir=tmp_path / "m")
    second = await open_database(database_url, migrations_dir=tmp_path / "m")
    results = await asyncio.gather(*(reserve(db) for _ in range(50) for db in (first, second)))
    assert sum(results) == 5
    assert await first.fetchval("SELECT used FROM account") == 5
    await first.close()
    await second.close()


async def test_an_unreachable_postgresql_is_a_storage_error_without_the_password():
    with pytest.raises(StorageError) as caught:
        await open_database("postgresql://bot:hunter2secret@127.0.0.1:9/db")
    assert "hunter2secret" not in str(caught.value)


async def test_an_unknown_scheme_is_a_storage_error():
    with pytest.raises(StorageError):
        await open_database("mysql://x")
