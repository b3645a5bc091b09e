"""Ours (`tests.fakes.run_bot`) or the floor (`bench.floor_bot`), counting its work; for the
benchmark.

    STATEMENT_COUNTS=counts.json FAKE_DISCORD_URL=... python -m bench.counting_bot
    (cd other/tree && STATEMENT_COUNTS=... python /path/to/bench/counting_bot.py)  # ours there
    STATEMENT_COUNTS=counts.json COUNT_CALLS=1 ... python -m bench.counting_bot floor

Every statement goes through `storage.sqlite._Session._run`; this wraps it, without touching
the production code, to count statements and commits: each COMMIT, and each statement that
changed rows outside a transaction (SQLite commits that one on its own). With COUNT_CALLS
set it also counts the Python calls the event loop's thread makes (cProfile's, builtins
included) from its first SIGUSR1 on: a measure of work that, unlike CPU time, does not move
with the machine's speed (it does move a little with timing: how many events one turn of
the loop finds). On SIGUSR1 and at exit it writes the totals so far to the file named by
STATEMENT_COUNTS, so the benchmark can subtract the counts read before its first interaction
from those read after its last reply.
"""

from __future__ import annotations

import atexit
import cProfile
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

COUNTS = {"statements": 0, "commits": 0, "calls": 0, "dumps": 0}
PROFILE = cProfile.Profile() if os.environ.get("COUNT_CALLS") else None


_run: Any = None  # storage.sqlite._Session._run, wrapped by `main`


async def _counted_run(self: Any, sql: str, args: tuple[Any, ...], read: Any) -> Any:
    conn = self._conn
    changes = conn.total_changes
    result = await _run(self, sql, args, read)
    COUNTS["statements"] += 1
    if sql.lstrip().upper().startswith("COMMIT"):
        COUNTS["commits"] += 1
    elif not conn.in_transaction and conn.total_changes != changes:
        COUNTS["commits"] += 1  # a write outside a transaction is committed on its own
    return result


def dump(*_: object) -> None:
    COUNTS["dumps"] += 1
    if PROFILE is not None:
        if COUNTS["dumps"] > 1:
            PROFILE.disable()
            COUNTS["calls"] = sum(entry.callcount for entry in PROFILE.getstats())
        PROFILE.enable()
    path = Path(os.environ["STATEMENT_COUNTS"])
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(COUNTS))
    temporary.replace(path)


def main() -> int:
    global _run
    from storage import sqlite
    from tests.fakes import run_bot

    _run = sqlite._Session._run
    sqlite._Session._run = _counted_run  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, dump)
    atexit.register(dump)
    return run_bot.main()


def main_floor() -> None:
    import runpy

    signal.signal(signal.SIGUSR1, dump)
    atexit.register(dump)
    runpy.run_module("bench.floor_bot", run_name="__main__")


if __name__ == "__main__":
    if sys.argv[1:] == ["floor"]:
        sys.path[0] = str(Path(__file__).resolve().parents[1])  # the floor of this tree
        main_floor()
    else:
        sys.path[0] = os.getcwd()  # ours is imported from the directory it is run in
        sys.exit(main())
