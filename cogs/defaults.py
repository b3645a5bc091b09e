"""`/settings`: a member's own defaults for `/imagine` in this server.

`/settings show`, `/settings set` (any of sampler, steps, size, cfg_scale, images,
negative_prompt at once) and `/settings clear [option]`. The values are checked as
`/imagine` checks them (`members.defaults`); `/imagine` uses them for options left out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs.utils import wording
from cogs.utils.guards import known_guild
from jobs.requests import NEGATIVE_PROMPT_LENGTH, SDXL_SIZES, InvalidOption, size_label
from members.defaults import OPTIONS, MemberDefaults

if TYPE_CHECKING:
    from bot import ImagineBot


class Defaults(commands.Cog):
    settings = app_commands.Group(
        name="settings", description="Your own defaults for /imagine here", guild_only=True
    )

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @property
    def store(self) -> MemberDefaults:
        return MemberDefaults(self.bot.services.db, self.bot.clock)

    @settings.command(name="show", description="Show your defaults for /imagine here")
    async def show(self, interaction: discord.Interaction) -> None:
        guild_id = await known_guild(interaction)
        if guild_id is None:
            return
        defaults = await self.store.get(guild_id, interaction.user.id)
        await interaction.response.send_message(
            wording.member_defaults_text(defaults), ephemeral=True
        )

    @settings.command(name="set", description="Set defaults for options /imagine leaves out")
    @app_commands.describe(
        sampler="Sampling method",
        steps="Denoising steps",
        cfg_scale="CFG scale: how closely to follow the prompt",
        size="Width×height",
        images="How many images",
        negative_prompt="What to keep out of the image",
    )
    @app_commands.choices(
        size=[app_commands.Choice(name=f"{w}×{h}", value=size_label(w, h)) for w, h in SDXL_SIZES]
    )
    async def set_(
        self,
        interaction: discord.Interaction,
        sampler: app_commands.Range[str, 1, 100] | None = None,
        steps: app_commands.Range[int, 1, 150] | None = None,
        cfg_scale: app_commands.Range[float, 1.0, 30.0] | None = None,
        size: app_commands.Range[str, 1, 20] | None = None,
        images: app_commands.Range[int, 1, 4] | None = None,
        negative_prompt: app_commands.Range[str, 1, NEGATIVE_PROMPT_LENGTH] | None = None,
    ) -> None:
        guild_id = await known_guild(interaction)
        if guild_id is None:
            return
        given = {
            "sampler": sampler,
            "steps": steps,
            "cfg_scale": cfg_scale,
            "size": size,
            "images": images,
            "negative_prompt": negative_prompt,
        }
        values: dict[str, object] = {
            name: value for name, value in given.items() if value is not None
        }
        if not values:
            await interaction.response.send_message(wording.DEFAULTS_NOTHING_GIVEN, ephemeral=True)
            return
        capabilities = self.bot.services.backend.capabilities
        try:
            await self.store.set(guild_id, interaction.user.id, values, capabilities)
        except InvalidOption as error:
            await interaction.response.send_message(wording.option_error(error), ephemeral=True)
            return
        defaults = await self.store.get(guild_id, interaction.user.id)
        await interaction.response.send_message(
            wording.member_defaults_text(defaults), ephemeral=True
        )

    @set_.autocomplete("sampler")
    async def sampler_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        offered = self.bot.services.backend.capabilities.samplers
        matches = [s for s in offered if current.lower() in s.lower()]
        return [app_commands.Choice(name=s, value=s) for s in matches[:25]]

    @settings.command(name="clear", description="Forget one of your defaults, or all of them")
    @app_commands.describe(option="The default to forget (all of them if left out)")
    @app_commands.choices(option=[app_commands.Choice(name=o, value=o) for o in OPTIONS])
    async def clear(self, interaction: discord.Interaction, option: str | None = None) -> None:
        guild_id = await known_guild(interaction)
        if guild_id is None:
            return
        if option is not None and option not in OPTIONS:
            await interaction.response.send_message(
                wording.option_not_valid("option"), ephemeral=True
            )
            return
        await self.store.clear(guild_id, interaction.user.id, option)
        defaults = await self.store.get(guild_id, interaction.user.id)
        await interaction.response.send_message(
            wording.member_defaults_text(defaults), ephemeral=True
        )


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Defaults(bot))
