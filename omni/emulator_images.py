"""The emulator's pictures: deterministic PNGs that look like something.

A gradient whose colours come from the seed, with the prompt and seed written on it, so a
person looking at the sandbox sees which request made which image.
"""

from __future__ import annotations

import hashlib
import io
import textwrap

from PIL import Image, ImageDraw, ImageFilter, ImageFont

PREVIEW_SIZE = 256


def _colours(prompt: str, seed: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    digest = hashlib.sha256(f"{seed}:{prompt}".encode()).digest()
    return (digest[0], digest[1], digest[2]), (digest[3], digest[4], digest[5])


def render(prompt: str, seed: int, width: int, height: int) -> bytes:
    """A PNG of `width`×`height`; the same arguments always give the same bytes."""
    top, bottom = _colours(prompt, seed)
    column = Image.linear_gradient("L").resize((1, height))
    gradient = Image.composite(
        Image.new("RGB", (1, height), bottom), Image.new("RGB", (1, height), top), column
    ).resize((width, height))
    draw = ImageDraw.Draw(gradient)
    size = max(12, min(width, height) // 24)
    font = ImageFont.load_default(size=size)
    wrapped = textwrap.wrap(prompt, width=max(10, width // (size // 2 + 1)))[:8]
    text = "\n".join([*wrapped, "", f"seed {seed}"])
    draw.multiline_text(
        (width // 16, height // 8),
        text,
        font=font,
        fill=(255, 255, 255),
        stroke_width=max(1, size // 12),
        stroke_fill=(0, 0, 0),
    )
    return _png(gradient)


def preview(prompt: str, seed: int) -> bytes:
    """A small, blurred version, as a sampler's half-way picture would look."""
    image = Image.open(io.BytesIO(render(prompt, seed, PREVIEW_SIZE, PREVIEW_SIZE)))
    return _png(image.filter(ImageFilter.GaussianBlur(6)))


def upscale(data: bytes, width: int, height: int) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return _png(image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS))


def image_size(data: bytes) -> tuple[int, int]:
    """Raises OSError/ValueError when `data` is not an image."""
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()
