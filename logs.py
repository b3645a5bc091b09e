"""Logging that never shows a secret, at any level, whichever library wrote the line.

Every line the root handler writes, traceback included, is redacted after formatting:
- each configured secret (bot token, API key, server password) of 8+ characters becomes
  `[redacted]`, and so do its URL-encoded and base64 forms and the parts of a `user:password`;
  shorter strings (a sandbox's placeholder key) are ordinary words and stay;
- Discord interaction and webhook tokens, which discord.py's DEBUG lines carry in URLs
  (`/webhooks/<application_id>/<token>/messages/@original`, `/interactions/<id>/<token>/
  callback`) and gateway payloads carry as `"token": "..."`, become `[token]`;
- credentials in headers (`Authorization: Bot ...`, `Bearer`, `Basic`) and in query strings
  (`?key=`, `api_key=`, presigned `X-Amz-Signature=`...) become `[redacted]`.
"""

from __future__ import annotations

import base64
import logging
import re
import sys
from collections.abc import Callable, Iterable
from typing import TextIO
from urllib.parse import quote

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "[redacted]"
TOKEN = "[token]"
MIN_SECRET_LENGTH = 8
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# /webhooks/<id>/<token>, /interactions/<id>/<token>: the segment after the numeric id.
_URL_TOKEN = re.compile(r"(?P<head>\b(?:webhooks|interactions)/\d+/)(?P<token>[^/?#\s\"'<>\[\]]+)")
# "token": "..." in JSON (gateway INTERACTION_CREATE payloads) or 'token': '...' in a repr.
_FIELD_TOKEN = re.compile(
    r"(?P<head>(?P<q>[\"'])(?:token|access_token|refresh_token)(?P=q)\s*:\s*)"
    r"(?P<v>[\"'])(?P<token>[^\"']+)(?P=v)",
    re.IGNORECASE,
)
_AUTH_HEADER = re.compile(
    r"(?P<head>\b(?:authorization|x-omniinfer-key|x-api-key)[\"']?\s*[:=]\s*[\"']?"
    r"(?:(?:bot|bearer|basic)\s+)?)(?P<token>[^\s\"',;}]+)",
    re.IGNORECASE,
)
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&](?:key|api_key|apikey|token|access_token|password|"
    r"x-amz-signature|x-amz-credential|x-amz-security-token|signature|sig)=)"
    r"(?P<token>[^&\s\"'#]+)",
    re.IGNORECASE,
)


def secret_forms(secrets: Iterable[str]) -> tuple[str, ...]:
    """The strings to hide for `secrets`: each of 8+ characters, its URL-encoded and base64
    forms, and each 8+ character part of a `user:password`; longest first."""
    forms: set[str] = set()
    for secret in secrets:
        if not secret or len(secret) < MIN_SECRET_LENGTH:
            continue
        forms.add(secret)
        forms.add(quote(secret, safe=""))
        forms.add(base64.b64encode(secret.encode()).decode().rstrip("="))
        if ":" in secret:
            forms.update(part for part in secret.split(":") if len(part) >= MIN_SECRET_LENGTH)
    return tuple(sorted(forms, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with secrets (see `secret_forms`; pass its result to skip the work), Discord
    tokens and header or query credentials replaced."""
    for form in secrets:
        if form and form in text:
            text = text.replace(form, REDACTED)
    text = _URL_TOKEN.sub(_keep_head(TOKEN), text)
    text = _FIELD_TOKEN.sub(lambda m: f"{m['head']}{m['v']}{TOKEN}{m['v']}", text)
    text = _AUTH_HEADER.sub(_keep_head(REDACTED), text)
    return _QUERY_SECRET.sub(_keep_head(REDACTED), text)


def _keep_head(replacement: str) -> Callable[[re.Match[str]], str]:
    def sub(match: re.Match[str]) -> str:
        if match["token"].startswith("["):  # already [redacted] or [token]
            return match[0]
        return match["head"] + replacement

    return sub


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then redacts the whole text (message, traceback, stack)."""

    def __init__(
        self, fmt: str = LOG_FORMAT, secrets: Iterable[str] = (), datefmt: str | None = None
    ) -> None:
        super().__init__(fmt, datefmt)
        self._forms = secret_forms(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self._forms)


def configure_logging(level: str, secrets: Iterable[str], *, stream: TextIO | None = None) -> None:
    """Send every logger's records at `level` ("DEBUG", "INFO", "WARNING", "ERROR", any case)
    and above to `stream` (stderr), redacted; replaces any handlers already on the root
    logger. Python warnings are logged too. Raises ValueError for an unknown level."""
    name = level.strip().upper()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(LEVELS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(RedactingFormatter(LOG_FORMAT, secrets))
    logging.basicConfig(level=name, handlers=[handler], force=True)
    logging.captureWarnings(True)
