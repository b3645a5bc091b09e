"""Ours (`tests.fakes.run_bot`), counting the SQLite statements it runs; for the benchmark.

    STATEMENT_COUNTS=counts.json FAKE_DISCORD_URL=... python -m bench.counting_bot
    (cd other/tree && STATEMENT_COUNTS=... python /path/to/bench/counting_bot.py)  # ours there

Every statement goes through `storage.sqlite._Session._run`; this wraps it, without touching
the production code, to count statements and commits: each COMMIT, and each statement that
changed rows outside a transaction (SQLite commits that one on its own). On SIGUSR1 and at
exit it writes the totals so far to the file named by STATEMENT_COUNTS, so the benchmark can
subtract the counts read before its first interaction from those read after its last reply.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

COUNTS = {"statements": 0, "commits": 0, "dumps": 0}


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


if __name__ == "__main__":
    sys.path[0] = os.getcwd()  # ours is imported from the directory it is run in
    sys.exit(main())
