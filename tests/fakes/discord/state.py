"""What the fake Discord knows: users, guilds, roles, channels, members and messages, and how
each looks as Discord JSON (the shapes discord.py 2.7 parses)."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import discord

DISCORD_EPOCH_MS = 1_420_070_400_000
ALL_PERMISSIONS = discord.Permissions.all().value
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
_counter = itertools.count()


def snowflake() -> int:
    """A real-looking, unique, increasing snowflake."""
    millis = int(time.time() * 1000) - DISCORD_EPOCH_MS
    return (millis << 22) | (next(_counter) & 0x3FFFFF)


def iso_now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class User:
    id: int
    name: str
    bot: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "discriminator": "0",
            "global_name": self.name,
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


@dataclass
class Role:
    id: int
    name: str
    permissions: int = 0
    position: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": True,
            "flags": 0,
        }


@dataclass
class Attachment:
    id: int
    filename: str
    data: bytes
    content_type: str
    url: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "filename": self.filename,
            "size": len(self.data),
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
        }


@dataclass
class Message:
    id: int
    channel_id: int
    guild_id: int
    author: User
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    flags: int = 0
    webhook_id: int | None = None
    nonce: str | None = None
    edited: bool = False
    deleted: bool = False

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & 64)

    def custom_ids(self) -> list[str]:
        """Every button custom id on the message, in order."""
        return [
            c["custom_id"]
            for row in self.components
            for c in row.get("components", [])
            if "custom_id" in c
        ]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "guild_id": str(self.guild_id),
            "author": self.author.to_json(),
            "content": self.content,
            "timestamp": iso_now(),
            "edited_timestamp": iso_now() if self.edited else None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [a.to_json() for a in self.attachments],
            "embeds": self.embeds,
            "components": self.components,
            "pinned": False,
            "type": 0,
            "flags": self.flags,
        }
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
            data["application_id"] = str(self.webhook_id)
        if self.nonce is not None:
            data["nonce"] = self.nonce
        return data


@dataclass
class Channel:
    id: int
    guild: Guild
    name: str
    nsfw: bool = False
    messages: dict[int, Message] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "type": 0,
            "guild_id": str(self.guild.id),
            "name": self.name,
            "position": 0,
            "nsfw": self.nsfw,
            "permission_overwrites": [],
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None,
        }

    def visible_messages(self) -> list[Message]:
        """What a member scrolling the channel sees: not deleted, not ephemeral."""
        return [m for m in self.messages.values() if not m.deleted and not m.ephemeral]


@dataclass
class Member:
    user: User
    guild: Guild
    roles: list[Role] = field(default_factory=list)

    @property
    def id(self) -> int:
        return self.user.id

    @property
    def permissions(self) -> int:
        if self.user.id == self.guild.owner_id:
            return ALL_PERMISSIONS
        value = self.guild.everyone.permissions
        for role in self.roles:
            value |= role.permissions
        if value & discord.Permissions(administrator=True).value:
            return ALL_PERMISSIONS
        return value

    def to_json(self, *, with_user: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "roles": [str(r.id) for r in self.roles],
            "joined_at": iso_now(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": None,
            "avatar": None,
            "pending": False,
        }
        if with_user:
            data["user"] = self.user.to_json()
        return data


@dataclass
class Guild:
    id: int
    name: str
    owner_id: int
    everyone: Role
    upload_limit: int = DEFAULT_UPLOAD_LIMIT
    roles: list[Role] = field(default_factory=list)
    channels: list[Channel] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)

    def add_role(self, name: str, permissions: int = 0) -> Role:
        role = Role(snowflake(), name, permissions, position=len(self.roles))
        self.roles.append(role)
        return role

    def add_channel(self, name: str, *, nsfw: bool = False) -> Channel:
        channel = Channel(snowflake(), self, name, nsfw)
        self.channels.append(channel)
        return channel

    def add_member(self, name: str, *, roles: list[Role] | None = None) -> Member:
        member = Member(User(snowflake(), name), self, list(roles or []))
        self.members.append(member)
        return member

    def member(self, user_id: int) -> Member | None:
        return next((m for m in self.members if m.id == user_id), None)

    def to_json(self, bot: Member) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "owner_id": str(self.owner_id),
            "roles": [self.everyone.to_json(), *(r.to_json() for r in self.roles)],
            "channels": [c.to_json() for c in self.channels],
            "members": [m.to_json() for m in [bot, *self.members]],
            "member_count": len(self.members) + 1,
            "features": [],
            "emojis": [],
            "stickers": [],
            "threads": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "large": False,
            "unavailable": False,
            "premium_tier": 0,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "preferred_locale": "en-US",
            "joined_at": iso_now(),
        }
