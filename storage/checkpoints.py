"""SQLite's WAL checkpoints, on a worker thread instead of inside a commit on the loop.

In WAL mode a commit appends pages to the `-wal` file, and a checkpoint copies them back
into the database file and syncs it. SQLite runs one by itself inside the commit that takes
the log past 1000 pages: that commit then held the event loop for 4 to 5 ms (five times per
200 jobs in bench/imagine_load), a stall of every job in flight. The bot's connection has
that automatic checkpoint turned off, and this runs a PASSIVE checkpoint on a connection of
its own, in a worker thread, once a second when something was written: readers and writers
go on meanwhile (WAL allows it), and the log stays about a second of writes long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable

log = logging.getLogger(__name__)

CHECK_EVERY = 1.0  # seconds between looks at whether anything was written


class Checkpointer:
    """Checkpoints `path` every CHECK_EVERY seconds while `writes()` (the bot's connection's
    count of changes since it opened) has moved. `start` on the loop; `stop` before the
    bot's connection closes (whose close then checkpoints what is left, as SQLite always
    does). If it cannot run, `fallback()` gives the checkpoints back to SQLite's commits."""

    def __init__(self, path: str, writes: Callable[[], int], fallback: Callable[[], None]) -> None:
        self._path = path
        self._writes = writes
        self._fallback = fallback
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sqlite-checkpoints")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        try:
            conn = _connect(self._path)
        except sqlite3.Error as error:
            log.error(
                "no connection for the checkpoints of %s (%s): left to commits", self._path, error
            )
            self._fallback()
            return
        checkpoint: asyncio.Future[bool] | None = None
        done = 0  # writes checkpointed: the counter starts at 0 when the bot's connection opens
        try:
            while True:
                await asyncio.sleep(CHECK_EVERY)
                try:
                    written = self._writes()
                except sqlite3.Error:  # the bot's connection is closed: nothing more to copy
                    return
                if written == done:
                    continue
                checkpoint = asyncio.ensure_future(asyncio.to_thread(_checkpoint, conn))
                try:
                    if await asyncio.shield(checkpoint):
                        done = written  # else (a reader in the way) again at the next look
                except sqlite3.Error as error:  # a full disk: the log keeps the pages
                    log.warning("SQLite checkpoint of %s failed: %s", self._path, error)
        finally:
            if checkpoint is not None and not checkpoint.done():
                with contextlib.suppress(sqlite3.Error):
                    await checkpoint  # the thread still uses the connection
            conn.close()


def _connect(path: str) -> sqlite3.Connection:
    # Used by one thread at a time (each checkpoint is awaited), never by two at once.
    return sqlite3.connect(path, timeout=0, check_same_thread=False)


def _checkpoint(conn: sqlite3.Connection) -> bool:
    """A PASSIVE checkpoint; whether it copied every page of the log."""
    _busy, logged, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return bool(copied >= logged)
