"""Fetching result images: concurrently, size-capped, retried, http(s) only.

Result URLs are plain unauthenticated object-store links, possibly on another host, so the
API key is never sent with them. They expire, so callers download as soon as a task is done;
an expired one answers 403 with an XML body, so a download must be HTTP 200, served as an
image (or generic binary) and start like a PNG, JPEG or WebP file. This checks the shape
only: a caller that shows the images to anyone should also decode them.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from yarl import URL

from omni.errors import DownloadFailed
from omni.retry import RetryPolicy

log = logging.getLogger(__name__)

DEFAULT_MAX_IMAGE_BYTES = 25 * 1024 * 1024
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)
_BINARY_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})


class _Retryable(Exception):
    pass


async def download_images(
    session: aiohttp.ClientSession,
    urls: list[str] | tuple[str, ...],
    *,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    retry: RetryPolicy = RetryPolicy(attempts=3),
) -> list[bytes]:
    """Download every URL at once; the result keeps the input order.

    Raises `DownloadFailed` naming the first image that could not be had.
    """
    for url in urls:  # every URL refused before any download starts
        _check_url(url)
    tasks = [
        asyncio.ensure_future(_download_checked(session, url, max_bytes, retry)) for url in urls
    ]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:  # one failed: the others are no longer wanted
            task.cancel()
        raise


async def download_image(
    session: aiohttp.ClientSession,
    url: str,
    *,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    retry: RetryPolicy = RetryPolicy(attempts=3),
) -> bytes:
    _check_url(url)
    return await _download_checked(session, url, max_bytes, retry)


async def _download_checked(
    session: aiohttp.ClientSession, url: str, max_bytes: int, retry: RetryPolicy
) -> bytes:
    """`download_image` for a URL `_check_url` has passed."""
    for failures in range(retry.attempts):
        try:
            return await _fetch(session, url, max_bytes)
        except _Retryable as exc:
            if failures + 1 >= retry.attempts:
                raise DownloadFailed(f"image {_short(url)}: {exc}") from None
            log.info("retrying image download %s: %s", _short(url), exc)
            await asyncio.sleep(retry.delay(failures))
    raise AssertionError("unreachable")  # pragma: no cover - loop always returns or raises


async def _fetch(session: aiohttp.ClientSession, url: str, max_bytes: int) -> bytes:
    try:
        async with session.get(url, timeout=DOWNLOAD_TIMEOUT) as response:
            if response.status >= 500 or response.status in (408, 429):
                raise _Retryable(f"HTTP {response.status}")
            if response.status != 200:
                raise DownloadFailed(f"image {_short(url)}: HTTP {response.status} (expired?)")
            content_type = response.content_type.lower()
            if not (content_type.startswith("image/") or content_type in _BINARY_TYPES):
                raise DownloadFailed(f"image {_short(url)}: served as {content_type!r}")
            if (response.content_length or 0) > max_bytes:
                raise DownloadFailed(f"image {_short(url)} is over {max_bytes} bytes")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_any():  # as it arrives
                size += len(chunk)
                if size > max_bytes:
                    raise DownloadFailed(f"image {_short(url)} is over {max_bytes} bytes")
                chunks.append(chunk)
            body = b"".join(chunks)  # the body copied once
            if not _looks_like_an_image(body):
                raise DownloadFailed(f"image {_short(url)}: not a PNG, JPEG or WebP image")
            return body
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _Retryable(type(exc).__name__) from exc


def _looks_like_an_image(data: bytes | bytearray) -> bool:
    """PNG, JPEG or WebP by their magic bytes: an expired link's XML error page is not one,
    and the official SDK saves exactly that as the "image"."""
    return (
        data.startswith(b"\x89PNG\r\n\x1a\n")
        or data.startswith(b"\xff\xd8\xff")
        or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
    )


def _check_url(url: str) -> None:
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise DownloadFailed(f"refusing to download {url[:80]!r}: only http(s) URLs are fetched")


def _short(url: str) -> str:
    """The URL without its query string: presigned links carry credentials there."""
    return str(URL(url).with_query(None))
