"""A member's picture for image-to-image: checked before any credit is spent, then fitted to
the SDXL size nearest its shape.

The attachment is upstream data like any other: its declared type and size are checked
before it is downloaded, and its bytes must decode as an image within the pixel cap. Pillow
runs on the image worker threads, never on the event loop.
"""

from __future__ import annotations

import io

import discord
from PIL import Image, ImageOps

from backends.untrusted import ImageLimits, open_image, run_in_image_thread
from jobs.backend import BadOutput

MAX_ATTACHMENT_BYTES = 20 * 1024 * 1024
ACCEPTED_TYPES = ("image/png", "image/jpeg", "image/webp")


class UnusableAttachment(Exception):
    """`reason` is one of: not_an_image, too_large, too_many_pixels, unreadable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def read_init_image(
    attachment: discord.Attachment, sizes: tuple[tuple[int, int], ...]
) -> tuple[bytes, tuple[int, int]]:
    """The picture as PNG bytes at the SDXL size nearest its aspect ratio, and that size."""
    content_type = (attachment.content_type or "").split(";")[0].strip().lower()
    if content_type not in ACCEPTED_TYPES:
        raise UnusableAttachment("not_an_image")
    if attachment.size > MAX_ATTACHMENT_BYTES:
        raise UnusableAttachment("too_large")
    try:
        data = await attachment.read()
    except (discord.HTTPException, discord.NotFound) as error:
        raise UnusableAttachment("unreadable") from error
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise UnusableAttachment("too_large")
    return await run_in_image_thread(fit_to_sdxl, data, sizes)


def nearest_size(width: int, height: int, sizes: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """The size in `sizes` whose aspect ratio is closest to width:height."""
    ratio = width / height
    return min(sizes, key=lambda size: abs(size[0] / size[1] - ratio))


def fit_to_sdxl(data: bytes, sizes: tuple[tuple[int, int], ...]) -> tuple[bytes, tuple[int, int]]:
    """Decode (within the pixel cap), crop to the nearest SDXL shape, resize, encode PNG."""
    try:
        image = open_image(data, ImageLimits(max_bytes=MAX_ATTACHMENT_BYTES))
    except BadOutput as error:
        reason = "too_many_pixels" if "pixel" in error.message else "not_an_image"
        raise UnusableAttachment(reason) from error
    try:
        image = ImageOps.exif_transpose(image).convert("RGB")
        size = nearest_size(image.width, image.height, sizes)
        fitted = ImageOps.fit(image, size, method=Image.Resampling.LANCZOS)
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise UnusableAttachment("unreadable") from error
    out = io.BytesIO()
    fitted.save(out, format="PNG")
    return out.getvalue(), size
