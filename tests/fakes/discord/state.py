"""What the fake Discord knows: applications, users, guilds, roles, channels, members and
messages, and how each looks as Discord JSON (the shapes discord.py 2.7 parses)."""

from __future__ import annotations

import base64
import itertools
import mimetypes
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import discord

DISCORD_EPOCH_MS = 1_420_070_400_000
ALL_PERMISSIONS = discord.Permissions.all().value
ADMINISTRATOR = discord.Permissions(administrator=True).value
EVERYONE_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    read_message_history=True,
    embed_links=True,
    attach_files=True,
    add_reactions=True,
    use_application_commands=True,
).value
EPHEMERAL, LOADING = 64, 128
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # an unboosted server
PREMIUM_TIERS = ((100 * 1024 * 1024, 3), (50 * 1024 * 1024, 2))
_counter = itertools.count()


def snowflake(shard: tuple[int, int] | None = None) -> int:
    """A real-looking, unique snowflake (discord.py reads times from them), increasing unless
    `shard` is given: then `(id >> 22) % count == shard_id` (Discord's guild-to-shard formula),
    by moving the timestamp back by less than `count` milliseconds."""
    millis = int(time.time() * 1000) - DISCORD_EPOCH_MS
    if shard is not None:
        shard_id, count = shard
        if not 0 <= shard_id < count:
            raise ValueError(f"no shard {shard_id} among {count} shards")
        millis -= (millis - shard_id) % count
    return (millis << 22) | (next(_counter) & 0x3FFFFF)


def shard_of(guild_id: int | None, count: int) -> int:
    """The shard that receives a guild's events; DMs (no guild) go to shard 0.

    https://discord.com/developers/docs/events/gateway#sharding
    """
    return 0 if guild_id is None else (guild_id >> 22) % count


def snowflake_time(value: int) -> datetime:
    return datetime.fromtimestamp(((value >> 22) + DISCORD_EPOCH_MS) / 1000, UTC)


def new_bot_token(user_id: int) -> str:
    """A token shaped like Discord's: base64 user id, timestamp, HMAC."""
    head = base64.urlsafe_b64encode(str(user_id).encode()).decode().rstrip("=")
    return f"{head}.{secrets.token_urlsafe(4)}.{secrets.token_urlsafe(27)}"


@dataclass(eq=False)
class User:
    id: int
    name: str
    bot: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "discriminator": "0",
            "global_name": None if self.bot else self.name,
            "avatar": None,
            "bot": self.bot,
            "system": False,
            "public_flags": 0,
        }


@dataclass
class SessionStartLimit:
    """`session_start_limit` of GET /gateway/bot: each IDENTIFY spends one of `remaining`.

    https://discord.com/developers/docs/events/gateway#session-start-limit-object
    """

    total: int = 1000
    remaining: int = 1000
    reset_after: int = 0  # milliseconds
    max_concurrency: int = 1  # IDENTIFYs per 5 seconds (not enforced by the fake)

    def to_json(self) -> dict[str, int]:
        return {
            "total": self.total,
            "remaining": self.remaining,
            "reset_after": self.reset_after,
            "max_concurrency": self.max_concurrency,
        }


@dataclass(eq=False)
class Application:
    """A bot application: its user, its token and what its integration role may do."""

    id: int
    name: str
    user: User
    token: str
    permissions: int = ALL_PERMISSIONS
    privileged_intents: int = 0  # GUILD_MEMBERS, GUILD_PRESENCES, MESSAGE_CONTENT bits allowed
    session_start_limit: SessionStartLimit = field(default_factory=SessionStartLimit)

    @classmethod
    def create(cls, name: str) -> Application:
        app_id = snowflake()
        user = User(app_id, name, bot=True)  # a bot user shares its application's id
        return cls(app_id, name, user, new_bot_token(app_id))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "owner": {"id": "1", "username": "owner", "discriminator": "0", "avatar": None},
            "flags": 0,
            "team": None,
            "bot": self.user.to_json(),
        }


@dataclass(eq=False)
class Role:
    id: int
    name: str
    permissions: int = 0
    position: int = 0
    bot_id: int | None = None  # the managed role Discord gives each bot

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "managed": self.bot_id is not None,
            "mentionable": False,
            "flags": 0,
        }
        if self.bot_id is not None:
            data["tags"] = {"bot_id": str(self.bot_id)}
        return data


@dataclass(eq=False)
class Attachment:
    id: int
    filename: str
    content_type: str
    data: bytes
    url: str
    description: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
        }
        if self.description is not None:
            data["description"] = self.description
        return data


def content_type_of(filename: str) -> str:
    """Discord works a file's type out from its name; discord.py sends octet-stream for all."""
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


@dataclass(eq=False)
class Message:
    id: int
    channel: Channel
    author: User
    app_id: int | None = None  # the application that sent it (routes button clicks)
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    webhook_id: int | None = None  # the application's id, for interaction responses
    interaction_metadata: dict[str, Any] | None = None
    interaction: dict[str, Any] | None = None  # the deprecated form, still parsed
    nonce: str | None = None
    reactions: dict[str, set[int]] = field(default_factory=dict)
    edited_at: datetime | None = None
    deleted: bool = False

    @property
    def channel_id(self) -> int:
        return self.channel.id

    @property
    def guild_id(self) -> int:
        return self.channel.guild.id

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & LOADING)

    def _all_components(self) -> Iterator[dict[str, Any]]:
        stack = list(reversed(self.components))
        while stack:
            component = stack.pop()
            yield component
            nested = list(component.get("components") or [])
            if component.get("accessory"):
                nested.append(component["accessory"])
            stack.extend(reversed(nested))

    def component(self, custom_id: str) -> dict[str, Any] | None:
        """The component (in rows, containers or sections) with this custom id."""
        return next((c for c in self._all_components() if c.get("custom_id") == custom_id), None)

    def custom_ids(self) -> list[str]:
        """Every custom id on the message, in reading order."""
        return [c["custom_id"] for c in self._all_components() if "custom_id" in c]

    def to_json(self, viewer: int | None = None) -> dict[str, Any]:
        """The message as `viewer` (a bot user id) fetches it: reactions say what is its own."""
        data: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel.id),
            "guild_id": str(self.guild_id),
            "author": self.author.to_json(),
            "content": self.content,
            "timestamp": snowflake_time(self.id).isoformat(),
            "edited_timestamp": self.edited_at.isoformat() if self.edited_at else None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [a.to_json() for a in self.attachments],
            "embeds": self.embeds,
            "components": self.components,
            "pinned": False,
            "type": self.type,
            "flags": self.flags,
        }
        if self.app_id is not None:
            data["application_id"] = str(self.app_id)
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
        if self.interaction_metadata is not None:
            data["interaction_metadata"] = self.interaction_metadata
        if self.interaction is not None:
            data["interaction"] = self.interaction
        if self.nonce is not None:
            data["nonce"] = self.nonce
        if self.reactions:
            data["reactions"] = [
                {
                    "emoji": _emoji_json(emoji),
                    "count": len(users),
                    "count_details": {"burst": 0, "normal": len(users)},
                    "me": viewer in users,
                    "me_burst": False,
                    "burst_colors": [],
                }
                for emoji, users in self.reactions.items()
            ]
        return data


def _emoji_json(emoji: str) -> dict[str, Any]:
    """`name:id` is a custom emoji, anything else a unicode one."""
    name, _, emoji_id = emoji.partition(":")
    return {"id": emoji_id or None, "name": name}


@dataclass(eq=False)
class Channel:
    id: int
    guild: Guild
    name: str
    nsfw: bool = False
    topic: str | None = None
    messages: dict[int, Message] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "type": 0,
            "guild_id": str(self.guild.id),
            "name": self.name,
            "position": self.guild.channels.index(self),
            "nsfw": self.nsfw,
            "permission_overwrites": [],
            "topic": self.topic,
            "last_message_id": str(next(reversed(self.messages))) if self.messages else None,
            "rate_limit_per_user": 0,
            "parent_id": None,
            "flags": 0,
        }

    def visible_messages(self) -> list[Message]:
        """What a member scrolling the channel sees: not deleted, not ephemeral, oldest first."""
        return [m for m in self.messages.values() if not m.deleted and not m.ephemeral]


@dataclass(eq=False)
class Member:
    user: User
    guild: Guild
    roles: list[Role] = field(default_factory=list)
    nick: str | None = None
    joined_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def id(self) -> int:
        return self.user.id

    @property
    def permissions(self) -> int:
        """Guild permissions as Discord computes them: owner and administrators get all."""
        if self.user.id == self.guild.owner.id:
            return ALL_PERMISSIONS
        value = self.guild.everyone.permissions
        for role in self.roles:
            value |= role.permissions
        return ALL_PERMISSIONS if value & ADMINISTRATOR else value

    def to_json(self, *, with_user: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "roles": [str(r.id) for r in self.roles],
            "joined_at": self.joined_at.isoformat(),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "pending": False,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self.user.to_json()
        return data


@dataclass(eq=False)
class Guild:
    id: int
    name: str
    world: World
    everyone: Role
    owner: Member = field(init=False)
    upload_limit: int = DEFAULT_UPLOAD_LIMIT  # bytes per attachment (attachment_size_limit)
    roles: list[Role] = field(default_factory=list)
    channels: list[Channel] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
    _bots: dict[int, Member] = field(default_factory=dict, repr=False)

    def add_role(self, name: str, permissions: int = 0) -> Role:
        role = Role(snowflake(), name, permissions, position=len(self.roles) + 1)
        self.roles.append(role)
        return role

    def add_channel(self, name: str, *, nsfw: bool = False, topic: str | None = None) -> Channel:
        channel = Channel(snowflake(), self, name, nsfw, topic)
        self.channels.append(channel)
        self.world.channels[channel.id] = channel
        return channel

    def add_member(self, name: str, *, roles: list[Role] | None = None) -> Member:
        user = User(snowflake(), name)
        self.world.users[user.id] = user
        member = Member(user, self, list(roles or []))
        self.members.append(member)
        return member

    def member(self, user_id: int) -> Member | None:
        if user_id in self._bots:
            return self._bots[user_id]
        return next((m for m in [self.owner, *self.members] if m.id == user_id), None)

    def bot_member(self, app: Application) -> Member:
        """The app's bot in this guild, with the managed role Discord gives it on joining."""
        member = self._bots.get(app.id)
        if member is None:
            role = Role(snowflake(), app.name, app.permissions, len(self.roles) + 1, app.id)
            self.roles.append(role)
            member = self._bots[app.id] = Member(app.user, self, [role])
        return member

    @property
    def premium_tier(self) -> int:
        return next((tier for size, tier in PREMIUM_TIERS if self.upload_limit >= size), 0)

    def to_json(self) -> dict[str, Any]:
        """The guild object (GET /guilds/{id}): no channels or members."""
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner.id),
            "roles": [self.everyone.to_json(), *(r.to_json() for r in self.roles)],
            "emojis": [],
            "stickers": [],
            "features": [],
            "afk_channel_id": None,
            "afk_timeout": 300,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": self.premium_tier,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "vanity_url_code": None,
        }

    def gateway_json(self, app: Application, *, all_members: bool) -> dict[str, Any]:
        """GUILD_CREATE as `app` receives it. Without the presences intent Discord sends only
        the bot's own member (and voice users), so `all_members` follows that intent."""
        me = self.bot_member(app)
        members = [me, self.owner, *self.members] if all_members else [me]
        return {
            **self.to_json(),
            "channels": [c.to_json() for c in self.channels],
            "members": [m.to_json() for m in members],
            "member_count": len(self.members) + 1 + len(self._bots),
            "threads": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "large": False,
            "unavailable": False,
            "joined_at": me.joined_at.isoformat(),
        }


@dataclass
class World:
    """Every guild, channel, user, message and attachment, by id."""

    base_url: str = ""  # where attachments are served, known once the server listens
    guilds: dict[int, Guild] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    users: dict[int, User] = field(default_factory=dict)
    messages: dict[int, Message] = field(default_factory=dict)
    attachments: dict[int, Attachment] = field(default_factory=dict)

    def add_guild(
        self,
        name: str,
        *,
        upload_limit: int = DEFAULT_UPLOAD_LIMIT,
        shard: tuple[int, int] | None = None,
    ) -> Guild:
        """A guild; with `shard=(shard_id, count)` its id puts it on that shard."""
        guild_id = snowflake(shard)
        everyone = Role(guild_id, "@everyone", EVERYONE_PERMISSIONS)  # @everyone shares the id
        guild = Guild(guild_id, name, self, everyone, upload_limit=upload_limit)
        owner = User(snowflake(), f"{name} owner")
        self.users[owner.id] = owner
        guild.owner = Member(owner, guild)
        self.guilds[guild_id] = guild
        return guild

    def add_message(self, channel: Channel, author: User, **fields: Any) -> Message:
        message = Message(snowflake(), channel, author, **fields)
        channel.messages[message.id] = message
        self.messages[message.id] = message
        return message

    def add_attachment(
        self, filename: str, data: bytes, description: str | None = None
    ) -> Attachment:
        attachment_id = snowflake()
        url = f"{self.base_url}/attachments/{attachment_id}/{filename}"
        attachment = Attachment(
            attachment_id, filename, content_type_of(filename), data, url, description
        )
        self.attachments[attachment_id] = attachment
        return attachment
