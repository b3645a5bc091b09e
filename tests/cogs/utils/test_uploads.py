"""Images are fitted into Discord's upload limits without being lost, and off the event loop."""

import asyncio
import io
import random
import threading

import pytest
from PIL import Image, ImageFile

from backends.untrusted import ImageLimits
from cogs.utils import uploads
from cogs.utils.uploads import MAX_ATTACHMENTS, batches, fit
from jobs.backend import BadOutput


def noisy_png(size: int = 512) -> bytes:
    """Random noise: the worst case for PNG, so it is big."""
    rng = random.Random(7)
    image = Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def encoded(fmt: str, size: tuple[int, int] = (8, 8), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, fmt)
    return buffer.getvalue()


async def test_images_under_the_limit_are_kept_byte_for_byte():
    data = noisy_png(64)
    [upload] = await fit([data], size_limit=len(data), stem="job")
    assert upload.data == data
    assert upload.filename == "job_0.png"


async def test_jpeg_and_webp_keep_their_extension():
    jpeg, webp = encoded("JPEG"), encoded("WEBP")
    kept = await fit([jpeg, webp], size_limit=10_000, stem="job")
    assert [(u.filename, u.data) for u in kept] == [("job_0.jpg", jpeg), ("job_1.webp", webp)]


async def test_an_image_over_the_limit_is_re_encoded_below_it_and_still_an_image():
    data = noisy_png()
    limit = len(data) // 3
    [upload] = await fit([data], size_limit=limit, stem="job")
    assert len(upload.data) <= limit
    with Image.open(io.BytesIO(upload.data)) as image:
        assert image.width > 0


async def test_order_is_kept_when_some_images_are_re_encoded():
    small, big = noisy_png(32), noisy_png(256)
    limit = len(big) // 2
    result = await fit([big, small, big], size_limit=limit, stem="job")
    assert [u.filename for u in result] == ["job_0.webp", "job_1.png", "job_2.webp"]
    assert result[1].data == small


async def test_uploads_are_split_across_messages_by_size_and_count():
    data = noisy_png(64)
    uploads_ = await fit([data] * 4, size_limit=len(data) * 2, stem="job")
    groups = batches(uploads_, size_limit=len(data) * 2)
    assert [len(g) for g in groups] == [2, 2]
    many = await fit([data] * 12, size_limit=len(data) * 100, stem="job")
    assert [len(g) for g in batches(many, len(data) * 100)] == [MAX_ATTACHMENTS, 2]


async def test_an_image_over_the_pixel_cap_is_refused_without_decoding(monkeypatch):
    loads: list[object] = []
    real_load = ImageFile.ImageFile.load

    def counting_load(self):
        loads.append(self.format)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    bomb = encoded("PNG", (10000, 10000), mode="1")  # 100 MP in a few kB
    with pytest.raises(BadOutput, match="10000×10000"):
        await fit([bomb], size_limit=len(bomb) - 1, stem="job")
    with pytest.raises(BadOutput, match="over the 4095 allowed"):
        await fit([noisy_png(64)], size_limit=100, stem="job", limits=ImageLimits(max_pixels=4095))
    assert loads == []


async def test_an_undecodable_image_over_the_limit_is_refused():
    data = noisy_png(128)
    with pytest.raises(BadOutput, match="does not decode"):
        await fit([data[: len(data) // 2]], size_limit=100, stem="job")


async def test_the_loop_keeps_running_while_an_image_is_re_encoded(monkeypatch):
    """The encoder, once inside its work, waits until the loop has ticked 20 more times: on
    the loop's own thread it would wait in vain (and the test would fail after 30 s)."""
    ticks = 0
    ticked = threading.Event()
    target = 0
    encodes: list[tuple[int, bool]] = []
    real_encode = uploads._encode

    def watched_encode(image, fmt, **options):
        nonlocal target
        start = ticks
        target = start + 20
        ticked.clear()
        went_on = ticked.wait(timeout=30)
        encodes.append((ticks - start, went_on))
        return real_encode(image, fmt, **options)

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            if target and ticks >= target:
                ticked.set()
            await asyncio.sleep(0)

    monkeypatch.setattr(uploads, "_encode", watched_encode)
    task = asyncio.create_task(ticker())
    try:
        data = noisy_png(1024)
        [upload] = await fit([data], size_limit=len(data) // 2, stem="job")
    finally:
        task.cancel()
    assert len(upload.data) <= len(data) // 2
    assert encodes and all(went_on and count >= 20 for count, went_on in encodes)
