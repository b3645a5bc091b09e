"""A server's settings in the database: the one module with SQL on `guild_settings`.

The channels a moderator points somewhere are named by `GuildChannel`, never by column: the
column each one is stored in is this module's business.
"""

from __future__ import annotations

from enum import StrEnum

from storage import Connection


class GuildChannel(StrEnum):
    """A server's special channels."""

    MODLOG = "modlog"  # where moderators' changes and account-wide problems are announced
    GALLERY = "gallery"  # where members' shared images are posted


# Every GuildChannel has its column; a lookup of anything else raises (a KeyError, which
# unlike an assert survives `python -O`), and only these constants reach the SQL text.
_COLUMNS: dict[GuildChannel, str] = {
    GuildChannel.MODLOG: "modlog_channel_id",
    GuildChannel.GALLERY: "gallery_channel_id",
}


async def channel(conn: Connection, guild_id: int, which: GuildChannel) -> int | None:
    column = _COLUMNS[which]
    return await conn.fetchval(f"SELECT {column} FROM guild_settings WHERE guild_id = $1", guild_id)


async def set_channel(
    conn: Connection, guild_id: int, which: GuildChannel, channel_id: int
) -> int | None:
    """Point `which` at `channel_id`; returns the channel it pointed at before."""
    column = _COLUMNS[which]
    before = await conn.fetchval(
        f"SELECT {column} FROM guild_settings WHERE guild_id = $1", guild_id
    )
    await conn.execute(
        f"""INSERT INTO guild_settings (guild_id, {column}) VALUES ($1, $2)
            ON CONFLICT (guild_id) DO UPDATE SET {column} = $2""",
        guild_id,
        channel_id,
    )
    return before


async def every_server(conn: Connection, which: GuildChannel) -> list[int]:
    """`which` channel of every server that has set one (an account-wide notice goes to
    every mod-log)."""
    column = _COLUMNS[which]
    rows = await conn.fetch(
        f"SELECT {column} AS channel_id FROM guild_settings WHERE {column} IS NOT NULL"
    )
    return [row["channel_id"] for row in rows]
