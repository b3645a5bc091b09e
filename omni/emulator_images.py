"""The emulator's pictures: deterministic PNGs that look like something, and their cache.

A diagonal three-colour gradient whose colours come from (prompt, seed), with the prompt and
the seed written on it, so a person looking at the sandbox sees which request made which
image. Rendering a 1024×1024 PNG takes tens of milliseconds of CPU, so the emulator renders on
first download, in a thread, and keeps only the most recently used images (`PngCache`).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import textwrap
from collections import OrderedDict
from collections.abc import Callable, Hashable

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

PREVIEW_SIDE = 256
MAX_SOURCE_PIXELS = 4096 * 4096  # upscale inputs beyond this are refused before decoding
_PNG_COMPRESS_LEVEL = 1  # fast; these pictures are gradients and compress well anyway

Colour = tuple[int, int, int]


def render(prompt: str, seed: int, width: int, height: int) -> bytes:
    """A `width`×`height` PNG; the same arguments always give the same bytes."""
    image = _gradient(_colours(prompt, seed), width, height)
    _caption(image, prompt, seed)
    return _png(image)


def preview(prompt: str, seed: int, width: int, height: int) -> bytes:
    """A small blurred version, as a sampler's half-way picture looks; long side 256 px."""
    scale = PREVIEW_SIDE / max(width, height)
    small = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = _gradient(_colours(prompt, seed), *small)
    _caption(image, prompt, seed)
    return _png(image.filter(ImageFilter.GaussianBlur(6)))


def img2img(init: bytes, prompt: str, seed: int, width: int, height: int, strength: float) -> bytes:
    """The starting picture resized to `width`×`height`, blended towards `render(prompt, seed)`
    by `strength` (0 keeps the picture, 1 ignores it): visibly made from the init image."""
    with Image.open(io.BytesIO(init)) as source:
        start = source.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    generated = _gradient(_colours(prompt, seed), width, height)
    blended = Image.blend(start, generated, strength)
    _caption(blended, prompt, seed)
    return _png(blended)


def upscale(data: bytes, width: int, height: int) -> bytes:
    """`data` (any image Pillow reads) resized to `width`×`height`, as a PNG."""
    with Image.open(io.BytesIO(data)) as source:
        mode = "RGBA" if "A" in source.getbands() else "RGB"
        resized = source.convert(mode).resize((width, height), Image.Resampling.LANCZOS)
    return _png(resized)


def inspect(data: bytes) -> tuple[int, int]:
    """The size of the image in `data`, decoding it fully so a truncated file is caught.

    Raises ValueError when `data` is not a readable image or is too large to accept.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_SOURCE_PIXELS:
                raise ValueError(f"{width}x{height} is larger than {MAX_SOURCE_PIXELS} pixels")
            image.load()
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable image ({exc})") from None
    return width, height


def _colours(prompt: str, seed: int) -> tuple[Colour, Colour, Colour]:
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    first, second, third = (tuple(digest[i : i + 3]) for i in (0, 3, 6))
    return first, second, third  # type: ignore[return-value]


def _gradient(colours: tuple[Colour, Colour, Colour], width: int, height: int) -> Image.Image:
    """Blend first → second → third along the diagonal, drawn at 256² and scaled up."""
    first, second, third = (Image.new("RGB", (256, 256), colour) for colour in colours)
    to_second, to_third = _diagonal_masks()
    blended = Image.composite(third, Image.composite(second, first, to_second), to_third)
    return blended.resize((width, height), Image.Resampling.BILINEAR)


@functools.cache
def _diagonal_masks() -> tuple[Image.Image, Image.Image]:
    """Masks rising 0 → 255 over the first and over the second half of the diagonal."""
    down = Image.linear_gradient("L")
    diagonal = ImageChops.add(down, down.transpose(Image.Transpose.ROTATE_270), scale=2.0)
    first_half = diagonal.point(lambda v: min(255, v * 2))
    second_half = diagonal.point(lambda v: max(0, v * 2 - 255))
    return first_half, second_half


def _caption(image: Image.Image, prompt: str, seed: int) -> None:
    """Write the (wrapped, truncated) prompt, the seed and the size on `image`."""
    width, height = image.size
    size = max(8, min(width, height) // 24)
    font = ImageFont.load_default(size=size)
    margin = max(2, min(width, height) // 16)
    average_char = font.getlength("abcdefghijklmnopqrstuvwxyz") / 26
    columns = max(8, int((width - 2 * margin) / max(1.0, average_char)))
    line_height = size * 1.3
    max_lines = max(1, min(12, int((height - 2 * margin) / line_height) - 3))
    lines = textwrap.wrap(
        " ".join(prompt.split()), columns, max_lines=max_lines, placeholder=" ..."
    )
    text = "\n".join([*lines, "", f"seed {seed}", f"{width}x{height}"])
    ImageDraw.Draw(image).multiline_text(
        (margin, margin),
        text,
        font=font,
        fill=(255, 255, 255),
        stroke_width=max(1, size // 12),
        stroke_fill=(0, 0, 0),
    )


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=_PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


class PngCache:
    """Rendered images by key, least recently used first out, bounded by count and bytes.

    Concurrent requests for the same key share one render, done in a worker thread so the
    event loop keeps answering progress polls meanwhile.
    """

    def __init__(self, max_items: int = 64, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._size = 0
        self._pending: dict[Hashable, asyncio.Future[bytes]] = {}

    def __len__(self) -> int:
        return len(self._items)

    async def get(self, key: Hashable, render: Callable[[], bytes]) -> bytes:
        cached = self._items.get(key)
        if cached is not None:
            self._items.move_to_end(key)
            return cached
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(asyncio.to_thread(render))
            self._pending[key] = pending
            pending.add_done_callback(lambda done: self._settle(key, done))
        # Shielded: one impatient client must not cancel a render others are waiting for.
        return await asyncio.shield(pending)

    def clear(self) -> None:
        self._items.clear()
        self._size = 0

    def _settle(self, key: Hashable, done: asyncio.Future[bytes]) -> None:
        self._pending.pop(key, None)
        if done.cancelled() or done.exception() is not None:
            return
        data = done.result()
        self._items[key] = data
        self._size += len(data)
        while self._items and (len(self._items) > self.max_items or self._size > self.max_bytes):
            _, evicted = self._items.popitem(last=False)
            self._size -= len(evicted)
