"""`/quota` for everyone; `/limits`, `/blocklist`, `/modlog` and `/credit show` for a
server's moderators; `/credit set`, `/credit allot` and `/credit unallot` for the bot's
operator alone (they change what every server gets; see `cogs/utils/checks.py`).

Every command first makes sure it runs in a server the bot is in (`cogs/utils/guards.py`),
before any other check: `guild_only` is only a hint to Discord's UI. Moderator groups are
hidden from members with `default_permissions`, and every call is checked again at run time
(admins can change command permissions, and clients can send anything). Changes are
announced in the server's mod-log channel when one is set; a change of the account's
credit, which every server shares, in every server's.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs.utils import wording
from cogs.utils.checks import (
    MODERATOR_PERMISSIONS,
    is_operator_of,
    require_moderator,
    require_operator,
)
from cogs.utils.guards import known_guild, require_known_guild
from quota.allotments import Allotment, AllotmentPeriod
from quota.changes import Change, CreditSet
from quota.guild_settings import GuildChannel
from quota.limits import LimitField, ScopeKind
from quota.moderation import ModerationError

if TYPE_CHECKING:
    from bot import ImagineBot

log = logging.getLogger(__name__)

Target = discord.Member | discord.User | discord.Role


class ModeratorGroup(app_commands.Group):
    """A command group only members with Manage Server may see and use."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(
            default_permissions=MODERATOR_PERMISSIONS,
            guild_only=True,
            **kwargs,  # type: ignore[arg-type]
        )

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        require_known_guild(interaction)
        require_moderator(interaction)
        return True


class CreditGroup(ModeratorGroup):
    """`/credit`: a server's moderators may look; changes are the operator's (each command
    checks), and the operator may look in any server."""

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        require_known_guild(interaction)
        if interaction.permissions.manage_guild:
            return True
        if not await is_operator_of(interaction):
            require_moderator(interaction)  # raises: answered as "only moderators"
        return True


def _when(timestamp: float | None) -> str:
    return wording.when(timestamp) if timestamp else "now"


def _scope_of(guild_id: int, target: Target | None) -> tuple[ScopeKind, int]:
    if target is None:
        return ScopeKind.GUILD, guild_id
    if isinstance(target, discord.Role):
        return ScopeKind.ROLE, target.id
    return ScopeKind.USER, target.id


class Limits(commands.Cog):
    limits = ModeratorGroup(name="limits", description="Per-member image limits")
    credit = CreditGroup(name="credit", description="The image account's credit and allotments")
    blocklist = ModeratorGroup(name="blocklist", description="Prompt words this server refuses")
    modlog = ModeratorGroup(name="modlog", description="Where limit changes are announced")

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self.moderation = bot.services.moderation

    async def _announce(
        self, interaction: discord.Interaction, guild_id: int, change: Change
    ) -> None:
        """Answer the moderator and post the change to the mod-log channel, if any (to every
        server's, for the account's credit: every server shares it)."""
        text = wording.describe(change)
        await interaction.response.send_message(f"✅ {text}", ephemeral=True)
        if isinstance(change, CreditSet):
            channel_ids = await self.moderation.modlog_channels()
        else:
            channel_id = await self.moderation.modlog_channel(guild_id)
            channel_ids = [] if channel_id is None else [channel_id]
        for channel_id in channel_ids:
            channel = self.bot.get_channel(channel_id)
            if not isinstance(channel, discord.abc.Messageable):
                continue
            try:
                await channel.send(
                    f"🛠️ {interaction.user.mention}: {text}",
                    allowed_mentions=discord.AllowedMentions.none(),
                )
            except discord.HTTPException as error:
                log.warning("could not post to the mod-log channel %s: %s", channel_id, error)

    async def _apply(
        self, interaction: discord.Interaction, guild_id: int, change: Awaitable[Change]
    ) -> None:
        try:
            done = await change
        except ModerationError as error:
            await interaction.response.send_message(
                wording.moderation_problem(error.problem), ephemeral=True
            )
            return
        await self._announce(interaction, guild_id, done)

    # -- everyone --------------------------------------------------------------------------

    @app_commands.command(name="quota", description="How many images you have left")
    @app_commands.guild_only()
    async def quota(self, interaction: discord.Interaction) -> None:
        guild_id = await known_guild(interaction)
        if guild_id is None:
            return
        roles = {role.id for role in getattr(interaction.user, "roles", ())}
        q = await self.moderation.quota(guild_id, interaction.user.id, roles)
        if q.banned:
            text = f"⛔ {wording.sentence(wording.BANNED)}"
        else:
            lines = [
                f"**Today:** {q.day_left} of {q.limits.images_per_day} images left"
                + (f" (more {_when(q.day_resets_at)})" if q.day_resets_at else ""),
                f"**This hour:** {q.hour_left} of {q.limits.images_per_hour} left"
                + (f" (more {_when(q.hour_resets_at)})" if q.hour_resets_at else ""),
                f"**Per job:** up to {q.limits.max_images_per_job} images, "
                f"{q.limits.concurrent_jobs} at once, {q.limits.cooldown_seconds}s apart",
            ]
            if q.usage.grant:
                lines.append(f"**Extra granted:** {q.usage.grant} images")
            text = "\n".join(lines)
        await interaction.response.send_message(text, ephemeral=True)

    # -- /limits ---------------------------------------------------------------------------

    @limits.command(name="show", description="Show the limits of the server, a role or a member")
    @app_commands.describe(target="A member or role (empty: the server's defaults)")
    async def limits_show(
        self, interaction: discord.Interaction, target: Target | None = None
    ) -> None:
        guild_id = require_known_guild(interaction)
        scope, scope_id = _scope_of(guild_id, target)
        rules = [
            r
            for r in await self.moderation.rules(guild_id)
            if r.scope is scope and r.scope_id == scope_id
        ]
        quota = None
        if isinstance(target, discord.Member):
            roles = {role.id for role in target.roles}
            quota = await self.moderation.quota(guild_id, target.id, roles)
        title = target.mention if target else None
        await interaction.response.send_message(
            wording.limits_text(title, rules, quota),
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @limits.command(name="set", description="Set a limit for the server, a role or a member")
    @app_commands.describe(
        scope="Whom the limit is for",
        field="Which limit",
        value="The new value",
        target="The role or member (for scope role/user)",
    )
    async def limits_set(
        self,
        interaction: discord.Interaction,
        scope: ScopeKind,
        field: LimitField,
        value: int,
        target: Target | None = None,
    ) -> None:
        guild_id = require_known_guild(interaction)
        if scope is ScopeKind.GUILD:
            scope_id = guild_id
        elif target is None or isinstance(target, discord.Role) != (scope is ScopeKind.ROLE):
            await interaction.response.send_message(
                wording.limit_target_missing(scope.value), ephemeral=True
            )
            return
        else:
            scope_id = target.id
        await self._apply(
            interaction,
            guild_id,
            self.moderation.set_limit(guild_id, interaction.user.id, scope, scope_id, field, value),
        )

    @limits.command(
        name="reset", description="Remove the limits set for the server, a role or a member"
    )
    @app_commands.describe(target="A member or role (empty: the server's defaults)")
    async def limits_reset(
        self, interaction: discord.Interaction, target: Target | None = None
    ) -> None:
        guild_id = require_known_guild(interaction)
        scope, scope_id = _scope_of(guild_id, target)
        await self._apply(
            interaction,
            guild_id,
            self.moderation.reset_limits(guild_id, interaction.user.id, scope, scope_id),
        )

    @limits.command(name="grant", description="Give a member extra images, once")
    async def limits_grant(
        self, interaction: discord.Interaction, user: discord.Member, images: int
    ) -> None:
        guild_id = require_known_guild(interaction)
        await self._apply(
            interaction,
            guild_id,
            self.moderation.grant(guild_id, interaction.user.id, user.id, images),
        )

    @limits.command(name="ban", description="Stop a member from generating images")
    async def limits_ban(self, interaction: discord.Interaction, user: discord.Member) -> None:
        guild_id = require_known_guild(interaction)
        await self._apply(
            interaction,
            guild_id,
            self.moderation.ban(guild_id, interaction.user.id, user.id),
        )

    @limits.command(name="unban", description="Let a member generate images again")
    async def limits_unban(self, interaction: discord.Interaction, user: discord.Member) -> None:
        guild_id = require_known_guild(interaction)
        await self._apply(
            interaction,
            guild_id,
            self.moderation.unban(guild_id, interaction.user.id, user.id),
        )

    # -- /credit ---------------------------------------------------------------------------

    @credit.command(name="show", description="The account's credit and this server's allotment")
    async def credit_show(self, interaction: discord.Interaction) -> None:
        guild_id = require_known_guild(interaction)
        status = await self.moderation.credit_status(guild_id)
        await interaction.response.send_message(wording.credit_status_text(status), ephemeral=True)

    @credit.command(
        name="set", description="Operator: state the account's credit (in images) after a top-up"
    )
    async def credit_set(self, interaction: discord.Interaction, images: int) -> None:
        guild_id = require_known_guild(interaction)
        await require_operator(interaction)
        await self._apply(
            interaction,
            guild_id,
            self.moderation.set_credit(guild_id, interaction.user.id, images),
        )

    @credit.command(
        name="allot", description="Operator: cap what this server's members may draw per period"
    )
    @app_commands.describe(
        images="Images this server's members may use per period, all together",
        period="Calendar day or month, in UTC (default: month)",
    )
    async def credit_allot(
        self,
        interaction: discord.Interaction,
        images: int,
        period: AllotmentPeriod = AllotmentPeriod.MONTH,
    ) -> None:
        guild_id = require_known_guild(interaction)
        await require_operator(interaction)
        await self._apply(
            interaction,
            guild_id,
            self.moderation.set_allotment(guild_id, interaction.user.id, Allotment(images, period)),
        )

    @credit.command(
        name="unallot", description="Operator: remove this server's cap on the account's credit"
    )
    async def credit_unallot(self, interaction: discord.Interaction) -> None:
        guild_id = require_known_guild(interaction)
        await require_operator(interaction)
        await self._apply(
            interaction,
            guild_id,
            self.moderation.set_allotment(guild_id, interaction.user.id, None),
        )

    # -- /blocklist ------------------------------------------------------------------------

    @blocklist.command(name="add", description="Refuse prompts containing a word or phrase")
    async def blocklist_add(self, interaction: discord.Interaction, word: str) -> None:
        guild_id = require_known_guild(interaction)
        await self._apply(
            interaction,
            guild_id,
            self.moderation.block_word(guild_id, interaction.user.id, word),
        )

    @blocklist.command(name="remove", description="Allow a word or phrase again")
    async def blocklist_remove(self, interaction: discord.Interaction, word: str) -> None:
        guild_id = require_known_guild(interaction)
        await self._apply(
            interaction,
            guild_id,
            self.moderation.unblock_word(guild_id, interaction.user.id, word),
        )

    @blocklist.command(name="list", description="The words this server refuses")
    async def blocklist_list(self, interaction: discord.Interaction) -> None:
        guild_id = require_known_guild(interaction)
        words = await self.moderation.blocklist(guild_id)
        await interaction.response.send_message(wording.blocklist_text(words), ephemeral=True)

    # -- /modlog ---------------------------------------------------------------------------

    @modlog.command(name="channel", description="Announce limit changes in this channel")
    async def modlog_channel(
        self, interaction: discord.Interaction, channel: discord.TextChannel
    ) -> None:
        guild_id = require_known_guild(interaction)
        await self._apply(
            interaction,
            guild_id,
            self.moderation.set_channel(
                guild_id, interaction.user.id, GuildChannel.MODLOG, channel.id
            ),
        )


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Limits(bot))
