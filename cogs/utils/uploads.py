"""Fitting finished images into Discord's upload limits.

A message takes at most 10 attachments and the guild caps each upload (10 MiB unboosted);
the request as a whole is held to the same cap here. Images too big alone are re-encoded
(PNG optimised, then WebP); the rest are split across messages.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

MAX_ATTACHMENTS = 10
_WEBP_QUALITIES = (92, 85, 75, 60)


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


def file_stem(job_id: str) -> str:
    """Image N of a job is uploaded as `{stem}_{N}.png` (or `.webp` when re-encoded)."""
    return f"sdxl_{job_id[:8]}"


def fit(images: list[bytes], size_limit: int, stem: str) -> list[Upload]:
    """Each image as an upload no bigger than `size_limit` bytes."""
    uploads = []
    for index, data in enumerate(images):
        if len(data) <= size_limit:
            uploads.append(Upload(f"{stem}_{index}.png", data))
        else:
            uploads.append(_shrink(data, size_limit, f"{stem}_{index}"))
    return uploads


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


def _shrink(data: bytes, size_limit: int, name: str) -> Upload:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
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
