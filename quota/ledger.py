"""The account's credit: reserved before a job is submitted, committed or released after.

The one module with SQL on the `account` row. Every function takes the caller's connection
(a transaction's, for changes), so a reservation and the job it pays for are written
together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage import Connection, Row

ACCOUNT_ID = 1


@dataclass(frozen=True)
class Balance:
    credit: int
    spent: int
    reserved: int
    paused_reason: str | None

    @property
    def available(self) -> int:
        return self.credit - self.spent - self.reserved


async def ensure_account(conn: Connection, initial_credit: int, now: float) -> None:
    """Create the account row on first start; later starts keep what the operator set."""
    await conn.execute(
        """INSERT INTO account (id, credit, spent, reserved, updated_at)
           VALUES ($1, $2, 0, 0, $3) ON CONFLICT (id) DO NOTHING""",
        ACCOUNT_ID,
        initial_credit,
        now,
    )


async def lock_balance(conn: Connection) -> Balance:
    """Read the balance, holding the account row until the transaction ends.

    This lock is what makes reservations atomic across processes on PostgreSQL (and
    serialises every admission, so a server's allotment is checked against a use no other
    admission is changing meanwhile); on SQLite, where `storage.sql` drops the clause, the
    transaction's BEGIN IMMEDIATE already holds the whole database.
    """
    row = await conn.fetchrow(
        "SELECT credit, spent, reserved, paused_reason FROM account WHERE id = $1 FOR UPDATE",
        ACCOUNT_ID,
    )
    return _balance(row)


async def balance(db: Connection) -> Balance:
    row = await db.fetchrow(
        "SELECT credit, spent, reserved, paused_reason FROM account WHERE id = $1", ACCOUNT_ID
    )
    return _balance(row)


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
    )
