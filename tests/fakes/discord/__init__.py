"""A local fake Discord that the real discord.py talks to (see server.py)."""

from tests.fakes.discord.interactions import InteractionRecord, Snapshot
from tests.fakes.discord.server import FakeDiscord
from tests.fakes.discord.state import Channel, Guild, Member, Message, Role

__all__ = [
    "Channel",
    "FakeDiscord",
    "Guild",
    "InteractionRecord",
    "Member",
    "Message",
    "Role",
    "Snapshot",
]
