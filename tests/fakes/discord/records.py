"""What the fake recorded: every request, every refusal, and each interaction as the member
saw it (its first response and everything after, in order), plus a way to wait for them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.discord.state import Channel, Guild, Member, Message

# A predicate may also read state the fake does not record (an emulator's counters, the
# database): it is re-checked this often too, not only when the fake records something.
RECHECK_EVERY = 0.05


class Signal:
    """Wakes waiters whenever something is recorded; they re-check their predicate (and at
    least every RECHECK_EVERY seconds).

    `notify` is synchronous, so recording code needs no lock and no await.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(RECHECK_EVERY):
                            await self._event.wait()
        except TimeoutError:
            raise TimeoutError(f"still waiting after {timeout} s for {what}") from None


@dataclass(frozen=True)
class Upload:
    """One file as the bot uploaded it."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class RequestLog:
    """One REST request the fake answered, refusals included."""

    method: str
    path: str
    route: str  # "METHOD /template", the rate limit bucket's route
    status: int
    at: float


@dataclass(frozen=True)
class Rejection:
    """A body Discord would refuse: too long, too many, too large or empty."""

    method: str
    path: str
    status: int
    code: int
    errors: dict[str, Any]


@dataclass(frozen=True)
class Call:
    """One request about an interaction: its first response ("callback"), "get", "edit",
    "delete" of a response message, or a "followup"; `code` is Discord's error code."""

    kind: str
    method: str
    path: str
    status: int
    payload: dict[str, Any]
    files: tuple[Upload, ...]
    code: int | None
    at: float

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def text_of(content: str, embeds: list[dict[str, Any]]) -> str:
    """Content and every embed's text, for assertions on wording."""
    parts = [content]
    for embed in embeds:
        parts.append((embed.get("author") or {}).get("name") or "")
        parts += [embed.get("title") or "", embed.get("description") or ""]
        parts += [f"{f['name']}: {f['value']}" for f in embed.get("fields", [])]
        parts.append((embed.get("footer") or {}).get("text") or "")
    return "\n".join(p for p in parts if p)


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
    def of(cls, message: Message, at: float) -> Snapshot:
        return cls(
            content=message.content,
            embeds=[dict(e) for e in message.embeds],
            components=list(message.components),
            attachments=[(a.filename, a.data) for a in message.attachments],
            flags=message.flags,
            at=at,
        )

    @property
    def text(self) -> str:
        return text_of(self.content, self.embeds)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & 64)

    @property
    def loading(self) -> bool:
        return bool(self.flags & 128)


@dataclass(eq=False)
class InteractionRecord:
    """One interaction the fake dispatched, and what the bot did with it."""

    id: int
    token: str
    type: int  # 2 slash command, 3 component
    app_id: int
    guild: Guild
    channel: Channel
    member: Member
    payload: dict[str, Any]
    created: float  # the fake's clock at dispatch
    message: Message | None = None  # the message a clicked component sits on
    session_id: str | None = None  # the gateway session it was sent to (see FakeDiscord.sessions)
    shard: tuple[int, int] | None = None  # that session's [shard_id, num_shards]
    response_type: int | None = None
    original: Message | None = None  # the response message, as it is now
    token_revoked: bool = False
    followups: list[Message] = field(default_factory=list)
    history: list[Snapshot] = field(default_factory=list)  # the original after each change
    calls: list[Call] = field(default_factory=list)
    _signal: Signal = field(default_factory=Signal, repr=False)

    @property
    def acknowledged(self) -> bool:
        return self.response_type is not None

    @property
    def original_deleted(self) -> bool:
        return self.original is not None and self.original.deleted

    @property
    def latest(self) -> Snapshot | None:
        return self.history[-1] if self.history else None

    @property
    def callbacks(self) -> list[Call]:
        """Every attempt at the first response, refused ones included."""
        return [c for c in self.calls if c.kind == "callback"]

    @property
    def responses(self) -> list[Call]:
        """What Discord accepted, in order: the first response, edits, followups, deletes."""
        return [c for c in self.calls if c.ok]

    @property
    def errors(self) -> list[int]:
        """Discord error codes the bot got back (10062, 40060, 50027, 50035...)."""
        return [c.code for c in self.calls if c.code is not None]

    @property
    def ephemeral_followups(self) -> list[Message]:
        return [m for m in self.followups if m.ephemeral]

    def said(self) -> str:
        """Everything the member was shown, newest last: original states and followups."""
        texts = [s.text for s in self.history]
        texts += [text_of(m.content, m.embeds) for m in self.followups]
        return "\n".join(texts)

    def add_call(self, call: Call) -> None:
        self.calls.append(call)
        self._signal.notify()

    async def wait_for(
        self, predicate: Callable[[InteractionRecord], bool], timeout: float = 10.0
    ) -> InteractionRecord:
        """Wait until `predicate(self)` holds; re-checked after each request about it."""
        await self._signal.wait_for(
            lambda: predicate(self), timeout, f"interaction {self.id}; calls so far: {self.calls}"
        )
        return self
