"""The account's credit: reserved before a job is submitted, committed or released after.

The one module with SQL on the `account` rows. Every function takes the caller's connection
(a transaction's, for changes), so a reservation and the job it pays for are written
together or not at all.

Two ledgers: the real account (row 1) and the sandbox's (row 2), so trying the bot with the
emulator never shows as spent on the real account. A process uses one of them, chosen once
at start with `use_sandbox_ledger`. An account may be unlimited (`ACCOUNT_CREDIT=unlimited`,
for a self-hosted server): spending is counted, the budget never refuses.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage import Connection, Row

REAL_ACCOUNT = 1
SANDBOX_ACCOUNT = 2
ACCOUNT_ID = REAL_ACCOUNT
_COLUMNS = "credit, spent, reserved, paused_reason, unlimited"


def use_sandbox_ledger(sandbox: bool) -> None:
    """Choose this process's ledger (called once at start, before any job)."""
    global ACCOUNT_ID
    ACCOUNT_ID = SANDBOX_ACCOUNT if sandbox else REAL_ACCOUNT


@dataclass(frozen=True)
class Balance:
    credit: int
    spent: int
    reserved: int
    paused_reason: str | None
    unlimited: bool = False

    @property
    def available(self) -> int:
        return self.credit - self.spent - self.reserved

    def covers(self, cost: int) -> bool:
        """Whether the budget allows `cost` more images."""
        return self.unlimited or cost <= self.available


async def ensure_account(conn: Connection, initial_credit: int | None, now: float) -> None:
    """Create the account row on first start (None: unlimited); later starts keep what the
    operator set, except that unlimited follows the setting (it is not a figure to keep)."""
    await conn.execute(
        """INSERT INTO account (id, credit, spent, reserved, updated_at, unlimited)
           VALUES ($1, $2, 0, 0, $3, $4) ON CONFLICT (id) DO NOTHING""",
        ACCOUNT_ID,
        initial_credit or 0,
        now,
        int(initial_credit is None),
    )
    await conn.execute(
        "UPDATE account SET unlimited = $2 WHERE id = $1",
        ACCOUNT_ID,
        int(initial_credit is None),
    )


async def lock_balance(conn: Connection) -> Balance:
    """Read the balance, holding the account row until the transaction ends.

    This lock is what makes reservations atomic across processes on PostgreSQL (and
    serialises every admission, so a server's allotment is checked against a use no other
    admission is changing meanwhile); on SQLite, where `storage.sql` drops the clause, the
    transaction's BEGIN IMMEDIATE already holds the whole database.
    """
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM account WHERE id = $1 FOR UPDATE",
        ACCOUNT_ID,
    )
    return _balance(row)


async def balance(db: Connection) -> Balance:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM account WHERE id = $1", ACCOUNT_ID)
    return _balance(row)


def paused_reason_sql() -> str:
    """A scalar subquery giving why generation is paused (NULL when it is not), for a
    statement of another module that must read the pause in the same round trip."""
    return f"(SELECT paused_reason FROM account WHERE id = {int(ACCOUNT_ID)})"


async def reserve(conn: Connection, cost: int, now: float) -> None:
    await conn.execute(
        "UPDATE account SET reserved = reserved + $2, updated_at = $3 WHERE id = $1",
        ACCOUNT_ID,
        cost,
        now,
    )


async def settle(conn: Connection, cost: int, *, spent: bool, now: float) -> None:
    """End a reservation: `spent` moves it to spent, otherwise it returns to the budget."""
    await conn.execute(
        """UPDATE account SET reserved = reserved - $2, spent = spent + $3, updated_at = $4
           WHERE id = $1""",
        ACCOUNT_ID,
        cost,
        cost if spent else 0,
        now,
    )


async def set_credit(conn: Connection, credit: int, now: float) -> Balance:
    """The operator states what the account has now: spending restarts from zero, and a
    pause for lack of credit is lifted."""
    await conn.execute(
        """UPDATE account SET credit = $2, spent = 0, paused_reason = NULL, updated_at = $3
           WHERE id = $1""",
        ACCOUNT_ID,
        credit,
        now,
    )
    return await balance(conn)


async def pause(conn: Connection, reason: str, now: float) -> bool:
    """Pause generation for everyone; True when this call is the one that paused it."""
    changed = await conn.execute(
        """UPDATE account SET paused_reason = $2, updated_at = $3
           WHERE id = $1 AND paused_reason IS NULL""",
        ACCOUNT_ID,
        reason,
        now,
    )
    return bool(changed)


def _balance(row: Row | None) -> Balance:
    if row is None:
        raise LookupError("no account row: ensure_account runs at start")
    return Balance(
        credit=row["credit"],
        spent=row["spent"],
        reserved=row["reserved"],
        paused_reason=row["paused_reason"],
        unlimited=bool(row["unlimited"]),
    )
