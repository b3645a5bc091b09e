"""Tests of the `a1111` package (client, pool, emulator) against real local emulators.

Helpers shared by those tests and by `tests/backends/test_a1111_backend.py`.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from PIL import Image

from a1111.emulator import Emulator

T = TypeVar("T")
LIMIT = 15.0  # seconds any single wait in these tests may take before it counts as a failure


def png(width: int, height: int, colour: tuple[int, int, int] = (200, 80, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def b64png(width: int, height: int) -> str:
    return base64.b64encode(png(width, height)).decode("ascii")


def image_size(data: bytes | str) -> tuple[int, int]:
    """The size of a PNG given as bytes, bare base64 or a data: URI (decoded fully)."""
    if isinstance(data, str):
        data = base64.b64decode(data.partition(",")[2] if data.startswith("data:") else data)
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.format == "PNG"
        return image.size


@asynccontextmanager
async def running(count: int, **options: Any) -> AsyncIterator[list[Emulator]]:
    """`count` emulators on free ports, stopped afterwards."""
    emulators = [Emulator(**options) for _ in range(count)]
    try:
        for emulator in emulators:
            await emulator.start()
        yield emulators
    finally:
        for emulator in emulators:
            await emulator.stop()


async def within(awaitable: Awaitable[T], seconds: float = LIMIT) -> T:
    """Await with a bound, so a broken promise fails the test instead of hanging it."""
    async with asyncio.timeout(seconds):
        return await awaitable
