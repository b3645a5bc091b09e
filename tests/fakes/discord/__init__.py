"""A local fake Discord that the real discord.py talks to (see server.py)."""

from tests.fakes.discord.gateway import Session
from tests.fakes.discord.limits import BucketSize, MessageLimits, RateLimiter
from tests.fakes.discord.records import Call, InteractionRecord, Rejection, Snapshot, Upload
from tests.fakes.discord.server import FakeDiscord
from tests.fakes.discord.state import (
    Application,
    Attachment,
    Channel,
    Guild,
    Member,
    Message,
    Role,
    SessionStartLimit,
    User,
)

__all__ = [
    "Application",
    "Attachment",
    "BucketSize",
    "Call",
    "Channel",
    "FakeDiscord",
    "Guild",
    "InteractionRecord",
    "Member",
    "Message",
    "MessageLimits",
    "RateLimiter",
    "Rejection",
    "Role",
    "Session",
    "SessionStartLimit",
    "Snapshot",
    "Upload",
    "User",
]
