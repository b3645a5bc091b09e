"""A real PostgreSQL for tests, from nothing (a pytest plugin: `pytest_plugins = ["tests.pg"]`).

- `TEST_DATABASE_URL` set: that server is used.
- Else, with PostgreSQL's server binaries installed (Debian: `apt-get install postgresql`), a
  throwaway cluster is started once per test session on 127.0.0.1 (random port, no fsync),
  as the `postgres` system user when running as root (the server refuses to run as root).
- Else the tests that need it are skipped, unless `REQUIRE_POSTGRES=1` (CI): then they fail.

Each test gets a fresh database, dropped afterwards. `database_url` runs a test on both
SQLite and PostgreSQL; `pg_url` is PostgreSQL only. `until_waiting_for_a_lock` waits for a
transaction to queue behind another, on either.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from storage import Database

_SUPERUSER = "postgres"
_RUN_AS = "postgres"  # the system user Debian's package creates


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ClusterUnavailable(Exception):
    """No PostgreSQL cluster can be started here; the message says why."""


class Cluster:
    """A throwaway PostgreSQL server from the installed binaries, in a temporary folder."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major_version)
        if not found:
            raise ClusterUnavailable(
                "no server binaries (/usr/lib/postgresql/*/bin; apt-get install postgresql) "
                "and TEST_DATABASE_URL is not set"
            )
        self.bin = Path(found[-1]).parent
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                pwd.getpwnam(_RUN_AS)
            except KeyError:
                raise ClusterUnavailable(
                    f"running as root and there is no {_RUN_AS!r} user to run the server as"
                ) from None
        # /tmp, not $TMPDIR: the postgres user must be able to reach the folder.
        self.dir = Path(tempfile.mkdtemp(prefix="pgtest-", dir="/tmp" if self.as_root else None))
        if self.as_root:
            shutil.chown(self.dir, _RUN_AS, _RUN_AS)
        self.port = _free_port()

    @property
    def url(self) -> str:
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", _RUN_AS, "--", *command]
        try:
            result = subprocess.run(command, capture_output=True, text=True)
        except OSError as error:  # e.g. no runuser
            raise ClusterUnavailable(f"cannot run {command[0]}: {error}") from None
        if check and result.returncode != 0:
            log = self.dir / "log"
            detail = log.read_text()[-2000:] if log.exists() else ""
            raise ClusterUnavailable(f"{args[0]} failed: {result.stderr.strip()} {detail}")

    def start(self) -> None:
        """initdb and start; on failure nothing is left behind."""
        try:
            self._start()
        except ClusterUnavailable:
            self.stop()
            raise

    def _start(self) -> None:
        data = str(self.dir / "data")
        self._run("initdb", "-D", data, "-U", _SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync")
        self.resume()

    def pause(self) -> None:
        """Stop the server, keeping its data: clients see the database go away."""
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start the server on its port, with its data (after `pause`, or the first time)."""
        data = str(self.dir / "data")
        options = " ".join(
            f"-c {setting}"
            for setting in (
                "listen_addresses=127.0.0.1",
                f"port={self.port}",
                "unix_socket_directories=''",  # TCP only: no socket path to get too long
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
                "max_connections=200",
            )
        )
        self._run("pg_ctl", "-D", data, "-o", options, "-l", str(self.dir / "log"), "-w", "start")

    def stop(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop", check=False
        )
        shutil.rmtree(self.dir, ignore_errors=True)


def _major_version(initdb: str) -> int:
    version = Path(initdb).parent.parent.name
    return int(version) if version.isdigit() else 0


def _admin(server: str, sql: str) -> None:
    """Run one statement on the server's maintenance database (sync: used by sync fixtures)."""

    async def run() -> None:
        admin = await asyncpg.connect(server)
        try:
            await admin.execute(sql)
        finally:
            await admin.close()

    asyncio.run(run())


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URL of a PostgreSQL server's maintenance database, for the whole session."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return
    try:
        cluster = Cluster()
        cluster.start()
    except ClusterUnavailable as error:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required (REQUIRE_POSTGRES=1): {error}", pytrace=False)
        pytest.skip(f"PostgreSQL not available: {error}")
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database on the test server; dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    _admin(pg_server, f"CREATE DATABASE {name}")
    yield urlsplit(pg_server)._replace(path=f"/{name}").geturl()
    _admin(pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs twice: on a fresh SQLite file and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/test.db"
    return request.getfixturevalue("pg_url")


async def until_waiting_for_a_lock(db: Database) -> None:
    """Until a transaction just begun waits for a lock another holds: SQLite's take a turn of
    the loop to try BEGIN IMMEDIATE and queue (on the database's own lock, or retrying while
    another process holds the file); PostgreSQL's lock table says so."""
    await asyncio.sleep(0)
    if db.dialect != "postgresql":
        return
    for _ in range(500):
        if await db.fetchval("SELECT COUNT(*) FROM pg_locks WHERE NOT granted"):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no transaction waited for a lock")
