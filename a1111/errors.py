"""One exception hierarchy for talking to AUTOMATIC1111/Forge servers.

Callers act on the class: `ServerDown` means the request certainly never reached the server
(safe to send elsewhere); `ConnectionLost` means it may have (a blocking txt2img may be
running there now); `CredentialsRefused` needs the operator; `InvalidField` needs other input.
Messages name the server by its URL without credentials and never contain a password.
"""

from __future__ import annotations


class A1111Error(Exception):
    """Base class; `message` is safe to log."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ServerDown(A1111Error):
    """No connection could be made (refused, unreachable, connect timeout): nothing was sent."""


class ConnectionLost(A1111Error):
    """The request was sent (or may have been) but no complete reply came back: the
    connection dropped, or no reply within the timeout (`timed_out`)."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class CredentialsRefused(A1111Error):
    """HTTP 401/403: the server wants other `--api-auth` credentials."""


class HTTPError(A1111Error):
    """Any other unsuccessful HTTP status; `detail` is the server's own words (shortened)."""

    def __init__(self, message: str, *, status: int, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class InvalidField(HTTPError):
    """The server refused the request's content (FastAPI's 422, or A1111's 400/404 such as
    "Sampler not found"); `field` is the A1111 field name when the server says or implies it."""

    def __init__(self, message: str, *, status: int, detail: str = "", field: str | None) -> None:
        super().__init__(message, status=status, detail=detail)
        self.field = field


class EndpointMissing(HTTPError):
    """HTTP 404 "Not Found" for the route itself (an older server, or one run `--nowebui`)."""


class MalformedReply(A1111Error):
    """A 2xx reply that is not the JSON this endpoint promises, or is too large."""
