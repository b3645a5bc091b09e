"""Fitting finished images into Discord's upload limits.

A message takes at most 10 attachments and the guild caps each upload (10 MiB unboosted);
the request as a whole is held to the same cap here. Images too big alone are re-encoded
(PNG optimised, then WebP); the rest are split across messages.

Re-encoding decodes the image with Pillow, which takes seconds for a large one: it runs on
the image worker threads (`backends.untrusted.run_in_image_thread`), never on the event loop,
and an image over the pixel cap is refused from its header before anything is decoded.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

from PIL import Image

from backends.untrusted import ImageLimits, open_image, run_in_image_thread
from jobs.backend import BadOutput

MAX_ATTACHMENTS = 10
DEFAULT_LIMITS = ImageLimits()
_WEBP_QUALITIES = (92, 85, 75, 60)


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


def file_stem(job_id: str) -> str:
    """Image N of a job is uploaded as `{stem}_{N}.png` (`.jpg`/`.webp` for those formats,
    and `.webp` when re-encoded)."""
    return f"sdxl_{job_id[:8]}"


async def fit(
    images: list[bytes], size_limit: int, stem: str, *, limits: ImageLimits = DEFAULT_LIMITS
) -> list[Upload]:
    """Each image as an upload no bigger than `size_limit` bytes, in order.

    Images within `size_limit` are kept byte for byte (not decoded). Larger ones are
    re-encoded in a worker thread; raises `jobs.backend.BadOutput` when such an image is over
    `limits.max_pixels` (judged from its header) or does not decode.
    """

    if all(len(data) <= size_limit for data in images):
        # The usual case, answered without a task per image.
        return [_kept(data, f"{stem}_{i}") for i, data in enumerate(images)]

    async def one(index: int, data: bytes) -> Upload:
        if len(data) <= size_limit:
            return _kept(data, f"{stem}_{index}")
        return await run_in_image_thread(_shrink, data, size_limit, f"{stem}_{index}", limits)

    return list(await asyncio.gather(*(one(i, data) for i, data in enumerate(images))))


def _kept(data: bytes, name: str) -> Upload:
    return Upload(f"{name}.{_extension(data)}", data)


def batches(uploads: list[Upload], size_limit: int) -> list[list[Upload]]:
    """Group uploads into messages of at most 10 files and `size_limit` bytes."""
    groups: list[list[Upload]] = [[]]
    total = 0
    for upload in uploads:
        if groups[-1] and (
            len(groups[-1]) >= MAX_ATTACHMENTS or total + len(upload.data) > size_limit
        ):
            groups.append([])
            total = 0
        groups[-1].append(upload)
        total += len(upload.data)
    return groups


def _extension(data: bytes) -> str:
    """The file extension from the first bytes (no decoding): APIs may send JPEG or WebP."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "png"


def _shrink(data: bytes, size_limit: int, name: str, limits: ImageLimits) -> Upload:
    """Blocks for seconds on a large image: runs on an image worker thread only."""
    with open_image(data, limits) as image:
        try:
            image.load()
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise BadOutput(f"image {name} does not decode ({exc})") from None
        optimised = _encode(image, "PNG", optimize=True)
        if len(optimised) <= size_limit:
            return Upload(f"{name}.png", optimised)
        rgb = image.convert("RGB")
        for quality in _WEBP_QUALITIES:
            encoded = _encode(rgb, "WEBP", quality=quality, method=4)
            if len(encoded) <= size_limit:
                return Upload(f"{name}.webp", encoded)
        scale = 0.75
        while True:
            smaller = rgb.resize((int(rgb.width * scale), int(rgb.height * scale)))
            encoded = _encode(smaller, "WEBP", quality=_WEBP_QUALITIES[-1], method=4)
            if len(encoded) <= size_limit or scale < 0.1:
                return Upload(f"{name}.webp", encoded)
            scale *= 0.75


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()
