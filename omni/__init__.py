"""An async client for the Omniinfer v2 API (SDXL 1.0), its emulator and a CLI.

Imports nothing from Discord or the rest of the project: it could be published alone.
"""

from omni.client import DEFAULT_BASE_URL, OmniClient
from omni.errors import (
    AuthenticationError,
    ConnectionFailed,
    DownloadFailed,
    InsufficientCredit,
    InvalidRequest,
    MalformedResponse,
    OmniError,
    RequestTimedOut,
    ServerError,
    SubmissionUncertain,
    TaskFailed,
    TaskNotFound,
    TaskTimedOut,
    TransientError,
    UnknownAPIError,
)
from omni.models import (
    GenerationInfo,
    Img2ImgRequest,
    ModelInfo,
    Progress,
    Submission,
    TaskStatus,
    Txt2ImgRequest,
    UpscaleRequest,
)
from omni.polling import PollPolicy
from omni.retry import RetryPolicy

__all__ = [
    "DEFAULT_BASE_URL",
    "AuthenticationError",
    "ConnectionFailed",
    "DownloadFailed",
    "GenerationInfo",
    "Img2ImgRequest",
    "InsufficientCredit",
    "InvalidRequest",
    "MalformedResponse",
    "ModelInfo",
    "OmniClient",
    "OmniError",
    "PollPolicy",
    "Progress",
    "RequestTimedOut",
    "RetryPolicy",
    "ServerError",
    "Submission",
    "SubmissionUncertain",
    "TaskFailed",
    "TaskNotFound",
    "TaskStatus",
    "TaskTimedOut",
    "TransientError",
    "Txt2ImgRequest",
    "UnknownAPIError",
    "UpscaleRequest",
]
