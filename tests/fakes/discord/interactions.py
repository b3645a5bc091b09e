"""One interaction as the fake saw it: its first response and everything after, in order."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.discord.state import Channel, Guild, Member, Message


@dataclass(frozen=True)
class Snapshot:
    """What a person saw in a message at one moment."""

    content: str
    embeds: list[dict[str, Any]]
    components: list[dict[str, Any]]
    attachments: list[tuple[str, bytes]]
    flags: int
    at: float

    @classmethod
    def of(cls, message: Message) -> Snapshot:
        return cls(
            content=message.content,
            embeds=[dict(e) for e in message.embeds],
            components=list(message.components),
            attachments=[(a.filename, a.data) for a in message.attachments],
            flags=message.flags,
            at=time.monotonic(),
        )

    @property
    def text(self) -> str:
        """Content and every embed's text, for assertions on wording."""
        parts = [self.content]
        for embed in self.embeds:
            parts += [embed.get("title") or "", embed.get("description") or ""]
            parts += [f"{f['name']}: {f['value']}" for f in embed.get("fields", [])]
            parts.append((embed.get("footer") or {}).get("text", ""))
        return "\n".join(p for p in parts if p)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & 64)

    @property
    def loading(self) -> bool:
        return bool(self.flags & 128)


@dataclass
class InteractionRecord:
    id: int
    token: str
    type: int
    guild: Guild
    channel: Channel
    member: Member
    payload: dict[str, Any]
    created: float
    response_type: int | None = None
    original: Message | None = None
    followups: list[Message] = field(default_factory=list)
    history: list[Snapshot] = field(default_factory=list)  # the original, after each change
    errors: list[int] = field(default_factory=list)  # Discord error codes returned
    original_deleted: bool = False

    @property
    def acknowledged(self) -> bool:
        return self.response_type is not None

    @property
    def latest(self) -> Snapshot | None:
        return self.history[-1] if self.history else None

    @property
    def ephemeral_followups(self) -> list[Message]:
        return [m for m in self.followups if m.ephemeral]

    def said(self) -> str:
        """Everything the member was shown, newest last: original states and followups."""
        texts = [s.text for s in self.history]
        texts += [Snapshot.of(m).text for m in self.followups]
        return "\n".join(texts)
