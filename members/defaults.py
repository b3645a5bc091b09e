"""A member's own defaults for `/imagine`, per server: the one module with SQL on
`member_defaults`.

A default is checked as `/imagine` checks the option (`jobs.requests.build_request`), so a
value `/imagine` would refuse is refused with the same words; `/imagine` fills in the options
the member left out (`fill`), and an option given explicitly always wins.
"""

from __future__ import annotations

import json
from dataclasses import fields, replace

from clock import Clock
from jobs.backend import Capabilities
from jobs.requests import ImagineOptions, build_request
from storage import Database

# The `/imagine` options a member may give a default to, in the order they are shown.
OPTIONS = ("sampler", "steps", "size", "cfg_scale", "images", "negative_prompt")
Defaults = dict[str, object]


def check(option: str, value: object, capabilities: Capabilities) -> None:
    """Raise `InvalidOption` (as `/imagine` would) when `value` is no valid `option`."""
    if option not in OPTIONS:
        raise ValueError(f"no default for {option!r}")
    build_request(
        ImagineOptions(prompt="a default", **{option: value}),
        capabilities,
        age_restricted=True,
        safety_negative_prompt="",
    )


def fill(options: ImagineOptions, defaults: Defaults) -> ImagineOptions:
    """`options` with each one the member left out (None) taken from their defaults."""
    names = {f.name for f in fields(ImagineOptions)}
    missing = {
        name: value
        for name, value in defaults.items()
        if name in names and getattr(options, name) is None
    }
    return replace(options, **missing) if missing else options


class MemberDefaults:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def get(self, guild_id: int, user_id: int) -> Defaults:
        rows = await self.db.fetch(
            "SELECT option, value FROM member_defaults WHERE guild_id = $1 AND user_id = $2",
            guild_id,
            user_id,
        )
        found = {row["option"]: json.loads(row["value"]) for row in rows}
        return {name: found[name] for name in OPTIONS if name in found}

    async def set(
        self, guild_id: int, user_id: int, values: Defaults, capabilities: Capabilities
    ) -> None:
        """Check every value first (nothing is stored if one is refused), then store them."""
        for option, value in values.items():
            check(option, value, capabilities)
        now = self.clock()
        async with self.db.transaction() as conn:
            for option, value in values.items():
                await conn.execute(
                    """DELETE FROM member_defaults
                       WHERE guild_id = $1 AND user_id = $2 AND option = $3""",
                    guild_id,
                    user_id,
                    option,
                )
                await conn.execute(
                    """INSERT INTO member_defaults (guild_id, user_id, option, value, updated_at)
                       VALUES ($1, $2, $3, $4, $5)""",
                    guild_id,
                    user_id,
                    option,
                    json.dumps(value),
                    now,
                )

    async def clear(self, guild_id: int, user_id: int, option: str | None = None) -> int:
        """Forget one default, or (None) all of them; how many were forgotten."""
        if option is None:
            return await self.db.execute(
                "DELETE FROM member_defaults WHERE guild_id = $1 AND user_id = $2",
                guild_id,
                user_id,
            )
        return await self.db.execute(
            "DELETE FROM member_defaults WHERE guild_id = $1 AND user_id = $2 AND option = $3",
            guild_id,
            user_id,
            option,
        )
