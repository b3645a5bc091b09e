"""The `app_state` table: small facts the bot keeps about itself between starts."""

from __future__ import annotations

from storage.database import Connection

DEV_GUILD_KEY = "commands_synced_to_guild"  # the dev server commands were last synced to
ACCOUNT_CREDIT_KEY = "account_credit_setting"  # ACCOUNT_CREDIT as it was at the last start


async def get(conn: Connection, key: str) -> str | None:
    return await conn.fetchval("SELECT value FROM app_state WHERE key = $1", key)


async def put(conn: Connection, key: str, value: str) -> None:
    await conn.execute(
        """INSERT INTO app_state (key, value) VALUES ($1, $2)
           ON CONFLICT (key) DO UPDATE SET value = $2""",
        key,
        value,
    )
