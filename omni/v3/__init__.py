"""Novita AI's v3 async image API (the vendor Omniinfer became): client, models, emulator.

Like the rest of `omni`, it imports nothing from Discord or the rest of the project. Errors
are `omni.errors` classes, plus `RateLimited` for HTTP 429.
"""

from omni.v3.client import DEFAULT_BASE_URL, NovitaClient, PollPolicy
from omni.v3.errors import RateLimited
from omni.v3.models import Img2ImgRequest, TaskImage, TaskResult, TaskStatus, Txt2ImgRequest

__all__ = [
    "DEFAULT_BASE_URL",
    "Img2ImgRequest",
    "NovitaClient",
    "PollPolicy",
    "RateLimited",
    "TaskImage",
    "TaskResult",
    "TaskStatus",
    "Txt2ImgRequest",
]
