"""Discord's contract, as the fake enforces it: message limits and per-route rate limits.

Every number is a field, so a test can tighten or loosen one rule without touching the rest.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

COMPONENTS_V2 = 1 << 15
LINK_BUTTON = 5


@dataclass(frozen=True)
class Problem:
    """One reason Discord would refuse a body, in its Invalid Form Body shape."""

    path: tuple[str, ...]
    code: str
    message: str


def form_errors(problems: list[Problem]) -> dict[str, Any]:
    """Nest problems as Discord does: {"embeds": {"0": {"title": {"_errors": [...]}}}}."""
    errors: dict[str, Any] = {}
    for problem in problems:
        node = errors
        for key in problem.path:
            node = node.setdefault(key, {})
        node.setdefault("_errors", []).append({"code": problem.code, "message": problem.message})
    return errors


@dataclass(frozen=True)
class MessageLimits:
    """What Discord accepts in one message (https://discord.com/developers/docs/resources/message)."""

    content: int = 2000
    embeds: int = 10
    embed_title: int = 256
    embed_description: int = 4096
    embed_fields: int = 25
    field_name: int = 256
    field_value: int = 1024
    footer_text: int = 2048
    author_name: int = 256
    embeds_total: int = 6000
    attachments: int = 10
    action_rows: int = 5
    row_items: int = 5
    custom_id: int = 100
    button_label: int = 80

    def problems(self, payload: dict[str, Any], attachment_count: int) -> list[Problem]:
        """Everything in a message body (a create or an edit) that Discord would refuse."""
        problems: list[Problem] = []
        content = payload.get("content") or ""
        if len(content) > self.content:
            problems.append(_too_long(("content",), self.content))
        problems += self._embed_problems(payload.get("embeds") or [])
        if attachment_count > self.attachments:
            problems.append(_too_long(("attachments",), self.attachments))
        if not int(payload.get("flags") or 0) & COMPONENTS_V2:
            problems += self._component_problems(payload.get("components") or [])
        return problems

    def _embed_problems(self, embeds: list[dict[str, Any]]) -> list[Problem]:
        problems: list[Problem] = []
        if len(embeds) > self.embeds:
            problems.append(_too_long(("embeds",), self.embeds))
        total = 0
        for index, embed in enumerate(embeds):
            at = ("embeds", str(index))
            footer, author = embed.get("footer") or {}, embed.get("author") or {}
            texts = [
                (("title",), embed.get("title") or "", self.embed_title),
                (("description",), embed.get("description") or "", self.embed_description),
                (("footer", "text"), footer.get("text") or "", self.footer_text),
                (("author", "name"), author.get("name") or "", self.author_name),
            ]
            fields = embed.get("fields") or []
            if len(fields) > self.embed_fields:
                problems.append(_too_long((*at, "fields"), self.embed_fields))
            for number, item in enumerate(fields):
                where = ("fields", str(number))
                texts.append(((*where, "name"), item.get("name") or "", self.field_name))
                texts.append(((*where, "value"), item.get("value") or "", self.field_value))
                for key in ("name", "value"):
                    if not item.get(key):
                        problems.append(_required((*at, *where, key)))
            for path, text, limit in texts:
                total += len(text)
                if len(text) > limit:
                    problems.append(_too_long((*at, *path), limit))
        if total > self.embeds_total:
            problems.append(
                Problem(
                    ("embeds",),
                    "MAX_EMBED_SIZE_EXCEEDED",
                    f"Embed size exceeds maximum size of {self.embeds_total}",
                )
            )
        return problems

    def _component_problems(self, rows: list[dict[str, Any]]) -> list[Problem]:
        problems: list[Problem] = []
        if len(rows) > self.action_rows:
            problems.append(_too_long(("components",), self.action_rows))
        seen: set[str] = set()
        for index, row in enumerate(rows):
            items = row.get("components") or []
            at = ("components", str(index), "components")
            if len(items) > self.row_items:
                problems.append(_too_long(at, self.row_items))
            for number, item in enumerate(items):
                where = (*at, str(number))
                custom_id = item.get("custom_id")
                if custom_id is None and item.get("style") != LINK_BUTTON:
                    problems.append(_required((*where, "custom_id")))
                elif custom_id is not None and len(custom_id) > self.custom_id:
                    problems.append(_too_long((*where, "custom_id"), self.custom_id))
                elif custom_id is not None and custom_id in seen:
                    problems.append(
                        Problem(
                            (*where, "custom_id"),
                            "COMPONENT_CUSTOM_ID_DUPLICATED",
                            "Component custom id cannot be duplicated",
                        )
                    )
                if custom_id is not None:
                    seen.add(custom_id)
                if len(item.get("label") or "") > self.button_label:
                    problems.append(_too_long((*where, "label"), self.button_label))
        return problems


def _too_long(path: tuple[str, ...], limit: int) -> Problem:
    """Discord says the same for too long a text and too many items."""
    return Problem(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")


def _required(path: tuple[str, ...]) -> Problem:
    return Problem(path, "BASE_TYPE_REQUIRED", "This field is required")


def is_empty(payload: dict[str, Any], attachment_count: int) -> bool:
    """Discord refuses (50006) a message with nothing a person could see."""
    return not (
        payload.get("content")
        or payload.get("embeds")
        or payload.get("components")
        or payload.get("sticker_ids")
        or payload.get("poll")
        or attachment_count
    )


@dataclass(frozen=True)
class BucketSize:
    """`limit` requests per `per` seconds."""

    limit: int
    per: float


@dataclass(frozen=True)
class Verdict:
    """The rate limiter's answer for one request: allowed or not, and the headers to send."""

    allowed: bool
    headers: dict[str, str]
    retry_after: float


@dataclass
class _Window:
    start: float
    used: int = 0


@dataclass
class RateLimiter:
    """Fixed windows per route and major parameter (channel, guild, webhook and token), as
    Discord counts them; `X-RateLimit-*` headers let discord.py pace itself before a 429.

    Routes are named as "METHOD /template", e.g. "PATCH
    /webhooks/{application_id}/{interaction_token}/messages/{message_id}". Real time is used
    (not the fake's clock): the client paces itself by sleeping real seconds.
    """

    default: BucketSize = BucketSize(5, 2.0)
    routes: Mapping[str, BucketSize] = field(
        default_factory=lambda: {"POST /channels/{channel_id}/messages": BucketSize(5, 5.0)}
    )
    enabled: bool = True  # off: no counting, no headers, no 429s
    clock: Callable[[], float] = time.monotonic
    _windows: dict[tuple[str, str], _Window] = field(default_factory=dict, repr=False)

    def size(self, route: str) -> BucketSize:
        return self.routes.get(route, self.default)

    def take(self, route: str, major: str) -> Verdict:
        """Count one request on `route` for the major parameters `major`."""
        size = self.size(route)
        now = self.clock()
        window = self._windows.get((route, major))
        if window is None or now - window.start >= size.per:
            window = self._windows[route, major] = _Window(now)
        reset_after = window.start + size.per - now
        allowed = window.used < size.limit
        if allowed:
            window.used += 1
        headers = {
            "X-RateLimit-Limit": str(size.limit),
            "X-RateLimit-Remaining": str(size.limit - window.used),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket_hash(route),
        }
        return Verdict(allowed, headers, reset_after)


def bucket_hash(route: str) -> str:
    """One stable hash per route, as Discord's `X-RateLimit-Bucket` (discord.py keys on it)."""
    return hashlib.sha1(route.encode()).hexdigest()[:16]
