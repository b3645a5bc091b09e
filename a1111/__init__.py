"""An async client for AUTOMATIC1111/Forge/SD.Next servers run with `--api`, a pool that
spreads jobs over several of them, and a local emulator (`python -m a1111.emulator`).

Imports nothing from Discord or the rest of the project: it could be published alone.
"""

from a1111.client import A1111Client, parse_auth
from a1111.errors import (
    A1111Error,
    ConnectionLost,
    CredentialsRefused,
    EndpointMissing,
    HTTPError,
    InvalidField,
    MalformedReply,
    ServerDown,
)
from a1111.models import (
    GenerationRequest,
    GenerationResult,
    Sampler,
    SDModel,
    TaskProgress,
    Upscaler,
    UpscaleResult,
)
from a1111.pool import A1111Pool, Server

__all__ = [
    "A1111Client",
    "A1111Error",
    "A1111Pool",
    "ConnectionLost",
    "CredentialsRefused",
    "EndpointMissing",
    "GenerationRequest",
    "GenerationResult",
    "HTTPError",
    "InvalidField",
    "MalformedReply",
    "SDModel",
    "Sampler",
    "Server",
    "ServerDown",
    "TaskProgress",
    "UpscaleResult",
    "Upscaler",
    "parse_auth",
]
