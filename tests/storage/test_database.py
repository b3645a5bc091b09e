"""The storage layer behaves the same on SQLite and PostgreSQL (`database_url` runs each test
on both): migrations, values, transactions, reservation races, and unavailability."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

import storage.checkpoints
import storage.sqlite
from storage import Database, StorageError, open_database
from tests.pg import until_waiting_for_a_lock

ACCOUNT = """-- an account with five places; the comment has a ; in it
CREATE TABLE account (id INTEGER PRIMARY KEY, used BIGINT NOT NULL, note TEXT);
INSERT INTO account (id, used, note) VALUES (1, 0, 'a;b');
"""


def write_migrations(directory: Path, *scripts: str) -> Path:
    directory.mkdir(exist_ok=True)
    for number, script in enumerate(scripts, start=1):
        (directory / f"{number:04d}_step{number}.sql").write_text(script)
    return directory


@pytest.fixture
async def db(database_url: str, tmp_path: Path):
    database = await open_database(
        database_url, migrations_dir=write_migrations(tmp_path / "m", ACCOUNT)
    )
    yield database
    await database.close()


async def recorded(db: Database) -> list[tuple[int, str]]:
    rows = await db.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    return [(row["version"], row["name"]) for row in rows]


async def test_migrations_apply_in_order_once_and_later_ones_on_next_open(database_url, tmp_path):
    migrations = write_migrations(tmp_path / "m", ACCOUNT, "ALTER TABLE account ADD COLUMN a TEXT;")
    db = await open_database(database_url, migrations_dir=migrations)
    assert await recorded(db) == [(1, "0001_step1"), (2, "0002_step2")]
    when = "SELECT version, applied_at FROM schema_migrations ORDER BY version"
    applied = await db.fetch(when)
    await db.close()

    db = await open_database(database_url, migrations_dir=migrations)  # nothing new
    assert await db.fetch(when) == applied
    assert await db.fetchval("SELECT COUNT(*) FROM account") == 1
    await db.close()

    (migrations / "0003_step3.sql").write_text("UPDATE account SET a = 'third';")
    db = await open_database(database_url, migrations_dir=migrations)
    assert [version for version, _ in await recorded(db)] == [1, 2, 3]
    assert await db.fetchval("SELECT a FROM account") == "third"
    await db.close()


async def test_two_processes_starting_at_once_apply_each_migration_once(database_url, tmp_path):
    migrations = write_migrations(tmp_path / "m", ACCOUNT, "UPDATE account SET used = used + 1;")
    first, second = await asyncio.gather(
        open_database(database_url, migrations_dir=migrations),
        open_database(database_url, migrations_dir=migrations),
    )
    assert await first.fetchval("SELECT used FROM account") == 1
    assert len(await second.fetch("SELECT * FROM schema_migrations")) == 2
    await first.close()
    await second.close()


async def test_a_failing_migration_leaves_nothing_half_done(database_url, tmp_path):
    migrations = write_migrations(
        tmp_path / "m", ACCOUNT, "CREATE TABLE extra (x TEXT);\nINSERT INTO nowhere VALUES (1);"
    )
    with pytest.raises(StorageError, match=r"0002_step2\.sql"):
        await open_database(database_url, migrations_dir=migrations)
    (migrations / "0002_step2.sql").write_text("CREATE TABLE extra (x TEXT);")
    db = await open_database(database_url, migrations_dir=migrations)
    assert [version for version, _ in await recorded(db)] == [1, 2]
    await db.close()


@pytest.mark.parametrize("name", ["1_x.txt.sql", "0001 initial.sql", "initial.sql"])
async def test_a_misnamed_migration_is_an_error_not_skipped(tmp_path, name):
    (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(StorageError, match="not named like"):
        await open_database(f"sqlite:///{tmp_path}/db.sqlite", migrations_dir=tmp_path)


async def test_values_round_trip_with_numbered_placeholders(db):
    snowflake = 1234567890123456789
    await db.execute("CREATE TABLE t (id BIGINT PRIMARY KEY, x DOUBLE PRECISION, s TEXT)")
    assert (
        await db.execute("INSERT INTO t (s, x, id) VALUES ($3, $2, $1)", snowflake, 0.25, None) == 1
    )
    assert await db.execute("INSERT INTO t (id, x, s) VALUES ($1, $2, $3)", 7, 1.5, "$1 ok") == 1
    row = await db.fetchrow(
        "SELECT * FROM t WHERE id = $1 AND (s IS NULL OR s = $2)", snowflake, "-"
    )
    assert row == {"id": snowflake, "x": 0.25, "s": None}
    assert row["id"] == snowflake and dict(row) == row
    assert await db.fetch("SELECT id, s FROM t ORDER BY id") == [
        {"id": 7, "s": "$1 ok"},
        {"id": snowflake, "s": None},
    ]
    assert await db.fetchval("SELECT $1 || '$1' || $1 || '''$2'''", "a") == "a$1a'$2'"
    assert await db.fetchval("SELECT note FROM account WHERE id = $1", 1) == "a;b"
    assert await db.fetchrow("SELECT * FROM t WHERE id = $1", 1) is None
    assert await db.fetchval("SELECT s FROM t WHERE id = $1", 1) is None
    assert await db.execute("UPDATE t SET x = x * $1", 2.0) == 2
    assert await db.execute("DELETE FROM t WHERE id = $1", 1) == 0


async def reserve_conditionally(db: Database) -> bool:
    async with db.transaction() as conn:
        changed = await conn.execute("UPDATE account SET used = used + 1 WHERE id = 1 AND used < 5")
        return changed == 1


async def reserve_after_locking(db: Database) -> bool:
    """Lock, check, update: one SQL for both (FOR UPDATE is dropped on SQLite)."""
    async with db.transaction() as conn:
        used = await conn.fetchval("SELECT used FROM account WHERE id = $1 FOR UPDATE", 1)
        await asyncio.sleep(0)  # let the others try to get in between
        if used >= 5:
            return False
        await conn.execute("UPDATE account SET used = $1 WHERE id = $2", used + 1, 1)
        return True


@pytest.mark.parametrize("reserve", [reserve_conditionally, reserve_after_locking])
async def test_a_hundred_racing_reservations_for_five_places_get_exactly_five(db, reserve):
    results = await asyncio.gather(*(reserve(db) for _ in range(100)))
    assert sum(results) == 5
    assert await db.fetchval("SELECT used FROM account") == 5


@pytest.mark.parametrize("reserve", [reserve_conditionally, reserve_after_locking])
async def test_the_race_holds_across_two_databases_standing_for_two_processes(
    db, database_url, tmp_path, reserve
):
    other = await open_database(database_url, migrations_dir=tmp_path / "m")
    results = await asyncio.gather(*(reserve(d) for _ in range(50) for d in (db, other)))
    assert sum(results) == 5
    assert await other.fetchval("SELECT used FROM account") == 5
    await other.close()


async def test_exclusive_transactions_take_turns_across_processes_and_read_what_came_before(
    db, database_url, tmp_path
):
    """An exclusive transaction waits for another (here another process's) to end, and then
    reads what it committed, even with plain reads that lock no row."""
    other = await open_database(database_url, migrations_dir=tmp_path / "m")
    holding, release = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with db.transaction(exclusive=True) as conn:
            await conn.execute("UPDATE account SET used = used + 1")
            holding.set()
            await release.wait()

    async def second() -> int:
        async with other.transaction(exclusive=True) as conn:
            return await conn.fetchval("SELECT used FROM account")

    holder = asyncio.create_task(first())
    await holding.wait()
    waiter = asyncio.create_task(second())
    try:
        await until_waiting_for_a_lock(db)
        assert not waiter.done()
    finally:
        release.set()
        await holder
        read = await waiter
        await other.close()
    assert read == 1


async def test_a_transaction_commits_or_rolls_back_as_a_whole(db):
    async with db.transaction() as conn:
        await conn.execute("UPDATE account SET used = 1")
        await conn.execute("UPDATE account SET note = 'kept'")
    with pytest.raises(RuntimeError, match="boom"):
        async with db.transaction() as conn:
            await conn.execute("UPDATE account SET used = 99")
            raise RuntimeError("boom")
    assert await db.fetchrow("SELECT used, note FROM account") == {"used": 1, "note": "kept"}


async def test_a_cancelled_transaction_rolls_back_and_the_database_stays_usable(db):
    inside = asyncio.Event()

    async def slow() -> None:
        async with db.transaction() as conn:
            await conn.execute("UPDATE account SET used = 42")
            inside.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(slow())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Cancelled while BEGIN is on its way (the first) or while waiting for the lock (the rest):
    # nothing may be left open.
    tasks = [asyncio.create_task(reserve_conditionally(db)) for _ in range(3)]
    await asyncio.sleep(0)
    for cancelled in tasks:
        cancelled.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    committed = sum(outcome is True for outcome in outcomes)
    assert await reserve_conditionally(db)
    assert await db.fetchval("SELECT used FROM account") == committed + 1


async def test_a_transaction_whose_statement_failed_is_never_taken_for_committed(db):
    """A caller that catches a failed statement and carries on: SQLite undoes that statement
    alone and commits the rest; PostgreSQL undoes the whole transaction, which must not pass
    as committed."""
    with contextlib.ExitStack() as refused:
        if db.dialect == "postgresql":
            refused.enter_context(pytest.raises(StorageError, match="rolled the transaction back"))
        async with db.transaction() as conn:
            await conn.execute("UPDATE account SET used = 7")
            with pytest.raises(Exception, match="nowhere"):
                await conn.execute("INSERT INTO nowhere VALUES (1)")
    expected = 0 if db.dialect == "postgresql" else 7
    assert await db.fetchval("SELECT used FROM account") == expected


async def test_the_database_itself_cannot_be_used_inside_its_own_transaction(db):
    async with db.transaction() as conn:
        with pytest.raises(RuntimeError, match="use its connection"):
            await db.fetchval("SELECT used FROM account")
        with pytest.raises(RuntimeError, match="use its connection"):
            async with db.transaction():
                pass
        assert await conn.fetchval("SELECT used FROM account") == 0


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
async def test_unreachable_postgresql_is_a_storage_error_without_the_password(scheme):
    with pytest.raises(StorageError) as caught:
        await open_database(f"{scheme}://bot:hunter2%40secret@127.0.0.1:9/db")
    assert "hunter2" not in str(caught.value) and "127.0.0.1:9/db" in str(caught.value)


async def test_a_missing_postgresql_database_is_a_storage_error_without_the_password(pg_url):
    url = urlsplit(pg_url)
    bad = url._replace(netloc=f"postgres:hunter2secret@{url.hostname}:{url.port}", path="/nope")
    with pytest.raises(StorageError, match="nope") as caught:
        await open_database(bad.geturl())
    assert "hunter2secret" not in str(caught.value)


async def test_a_connection_lost_mid_transaction_is_a_storage_error_then_recovers(pg_url, tmp_path):
    db = await open_database(pg_url, migrations_dir=write_migrations(tmp_path / "m", ACCOUNT))
    admin = await asyncpg.connect(pg_url)
    goodbye = asyncio.Event()
    with pytest.raises(StorageError, match="unavailable"):
        async with db.transaction() as conn:
            await conn.execute("UPDATE account SET used = 1")
            # asyncpg calls its termination listeners once the server's goodbye is read.
            conn._conn.add_termination_listener(lambda _closed: goodbye.set())
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            async with asyncio.timeout(10):
                await goodbye.wait()
            await conn.execute("UPDATE account SET used = 2")
    await admin.close()
    assert await db.fetchval("SELECT used FROM account") == 0
    await db.close()


@pytest.mark.parametrize("url", ["mysql://u:pw@host/db", "data/bot.db", "sqlite://"])
async def test_an_unusable_url_is_a_storage_error(url, tmp_path):
    with pytest.raises(StorageError) as caught:
        await open_database(url, migrations_dir=tmp_path)
    assert "pw" not in str(caught.value)


async def test_an_unopenable_sqlite_file_is_a_storage_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StorageError, match="cannot open"):
        await open_database(f"sqlite:///{tmp_path}/file/bot.db", migrations_dir=tmp_path)
    (tmp_path / "garbage.db").write_bytes(b"not a database" * 100)
    with pytest.raises(StorageError, match="cannot open"):
        await open_database(f"sqlite:///{tmp_path}/garbage.db", migrations_dir=tmp_path)


async def test_sqlite_locked_by_another_process_too_long_is_a_storage_error(tmp_path, monkeypatch):
    monkeypatch.setattr(storage.sqlite, "BUSY_TIMEOUT_MS", 50)
    path = tmp_path / "bot.db"
    db = await open_database(
        f"sqlite:///{path}", migrations_dir=write_migrations(tmp_path / "m", ACCOUNT)
    )
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(StorageError, match="locked"):
        await reserve_conditionally(db)
    other.execute("ROLLBACK")
    other.close()
    assert await reserve_conditionally(db)
    await db.close()


async def test_sqlite_waits_for_another_process_write_lock_while_the_loop_runs_on(tmp_path):
    path = tmp_path / "bot.db"
    db = await open_database(
        f"sqlite:///{path}", migrations_dir=write_migrations(tmp_path / "m", ACCOUNT)
    )
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    waiting = asyncio.create_task(reserve_conditionally(db))
    for _ in range(10):  # other coroutines keep running while the reservation waits
        await asyncio.sleep(0.01)
    assert not waiting.done()
    other.execute("ROLLBACK")
    other.close()
    assert await waiting
    await db.close()


async def test_a_sqlite_url_creates_its_folder_and_file_on_first_open(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = await open_database(
        "sqlite:///data/bot.db", migrations_dir=write_migrations(tmp_path / "m", ACCOUNT)
    )
    await db.close()
    assert (tmp_path / "data" / "bot.db").is_file()


async def test_sqlite_checkpoints_off_the_loop_and_soon_after_writes(tmp_path):
    """A commit that takes the write-ahead log past SQLite's 1000 pages does not copy them
    back into the database file itself (that held the loop for milliseconds); a worker
    thread does, within a few seconds."""
    path = tmp_path / "bot.db"
    db = await open_database(f"sqlite:///{path}", migrations_dir=write_migrations(tmp_path / "m"))
    await db.execute("CREATE TABLE pages (body TEXT)")
    before = path.stat().st_size
    async with db.transaction() as conn:
        for _ in range(1500):  # about 1500 pages of 4 KiB
            await conn.execute("INSERT INTO pages VALUES ($1)", "x" * 4000)
    assert path.stat().st_size == before  # the commit only appended to the log
    for _ in range(100):  # up to 10 s
        if path.stat().st_size >= 1500 * 4000:
            break
        await asyncio.sleep(0.1)
    assert path.stat().st_size >= 1500 * 4000
    assert await db.fetchval("SELECT COUNT(*) FROM pages") == 1500
    await db.close()


async def test_a_database_whose_connection_was_closed_under_it_still_closes(tmp_path, monkeypatch):
    """A failed rollback closes the connection (see `SqliteDatabase.transaction`): the
    checkpoints stop with it, and closing the database afterwards raises nothing."""
    monkeypatch.setattr(storage.checkpoints, "CHECK_EVERY", 0)  # they look at every turn
    db = await open_database(
        f"sqlite:///{tmp_path}/bot.db", migrations_dir=write_migrations(tmp_path / "m")
    )
    await db.execute("CREATE TABLE pages (body TEXT)")
    db._conn.close()  # type: ignore[attr-defined]
    for _ in range(3):  # a turn to start, one to look and find the connection closed
        await asyncio.sleep(0)
    await db.close()


async def test_checkpoints_go_back_to_commits_when_they_cannot_run_apart(tmp_path, monkeypatch):
    def no_connection(*args: object, **kwargs: object) -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(storage.checkpoints, "_connect", no_connection)
    db = await open_database(
        f"sqlite:///{tmp_path}/bot.db", migrations_dir=write_migrations(tmp_path / "m")
    )
    await asyncio.sleep(0)  # the checkpoints' task tries to connect at its first turn
    assert await db.fetchval("PRAGMA wal_autocheckpoint") == 1000
    await db.close()
