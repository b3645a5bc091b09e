"""Discord's contract, as the fake enforces it: message limits and per-route rate limits."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

CONTENT_LIMIT = 2000
EMBED_LIMITS = {"title": 256, "description": 4096}
FIELD_NAME_LIMIT, FIELD_VALUE_LIMIT, FIELD_COUNT_LIMIT = 256, 1024, 25
FOOTER_LIMIT, AUTHOR_LIMIT = 2048, 256
EMBEDS_TOTAL_LIMIT, EMBED_COUNT_LIMIT = 6000, 10
ATTACHMENT_COUNT_LIMIT = 10


def message_problems(
    payload: dict[str, Any], files: list[tuple[str, bytes]], upload_limit: int
) -> list[str]:
    """What real Discord would reject in a message body (empty list: acceptable)."""
    problems = []
    content = payload.get("content") or ""
    if len(content) > CONTENT_LIMIT:
        problems.append(f"content: must be {CONTENT_LIMIT} or fewer in length")
    embeds = payload.get("embeds") or []
    if len(embeds) > EMBED_COUNT_LIMIT:
        problems.append("embeds: must be 10 or fewer in length")
    total = 0
    for index, embed in enumerate(embeds):
        for key, limit in EMBED_LIMITS.items():
            text = embed.get(key) or ""
            total += len(text)
            if len(text) > limit:
                problems.append(f"embeds.{index}.{key}: must be {limit} or fewer in length")
        fields = embed.get("fields") or []
        if len(fields) > FIELD_COUNT_LIMIT:
            problems.append(f"embeds.{index}.fields: must be 25 or fewer in length")
        for f in fields:
            total += len(f.get("name", "")) + len(f.get("value", ""))
            if not f.get("name") or not f.get("value"):
                problems.append(f"embeds.{index}.fields: name and value are required")
            if (
                len(f.get("name", "")) > FIELD_NAME_LIMIT
                or len(f.get("value", "")) > FIELD_VALUE_LIMIT
            ):
                problems.append(f"embeds.{index}.fields: too long")
        footer = (embed.get("footer") or {}).get("text", "")
        author = (embed.get("author") or {}).get("name", "")
        total += len(footer) + len(author)
        if len(footer) > FOOTER_LIMIT or len(author) > AUTHOR_LIMIT:
            problems.append(f"embeds.{index}: footer or author too long")
    if total > EMBEDS_TOTAL_LIMIT:
        problems.append(f"embeds: total length must be {EMBEDS_TOTAL_LIMIT} or fewer")
    if len(files) > ATTACHMENT_COUNT_LIMIT:
        problems.append("attachments: must be 10 or fewer in length")
    return problems


def too_large(files: list[tuple[str, bytes]], upload_limit: int) -> bool:
    return (
        any(len(data) > upload_limit for _, data in files)
        or sum(len(data) for _, data in files) > upload_limit
    )


@dataclass
class Bucket:
    limit: int
    per: float
    window_start: float = 0.0
    used: int = 0

    def take(self, now: float) -> tuple[bool, int, float]:
        """(allowed, remaining, seconds until the window resets)."""
        if now - self.window_start >= self.per:
            self.window_start, self.used = now, 0
        reset_after = self.window_start + self.per - now
        if self.used >= self.limit:
            return False, 0, reset_after
        self.used += 1
        return True, self.limit - self.used, reset_after


@dataclass
class RateLimiter:
    """Fixed windows per bucket key, like Discord's per-route buckets."""

    limit: int = 5
    per: float = 2.0
    buckets: dict[str, Bucket] = field(default_factory=dict)

    def take(self, key: str) -> tuple[bool, dict[str, str], float]:
        bucket = self.buckets.setdefault(key, Bucket(self.limit, self.per))
        allowed, remaining, reset_after = bucket.take(time.monotonic())
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": key.replace(" ", "-")[:64],
        }
        return allowed, headers, reset_after
