"""Images are fitted into Discord's upload limits without being lost."""

import io
import random

from PIL import Image

from cogs.utils.uploads import MAX_ATTACHMENTS, batches, fit


def noisy_png(size: int = 512) -> bytes:
    """Random noise: the worst case for PNG, so it is big."""
    rng = random.Random(7)
    image = Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_images_under_the_limit_are_kept_byte_for_byte():
    data = noisy_png(64)
    [upload] = fit([data], size_limit=len(data), stem="job")
    assert upload.data == data
    assert upload.filename == "job_0.png"


def test_an_image_over_the_limit_is_re_encoded_below_it_and_still_an_image():
    data = noisy_png()
    limit = len(data) // 3
    [upload] = fit([data], size_limit=limit, stem="job")
    assert len(upload.data) <= limit
    with Image.open(io.BytesIO(upload.data)) as image:
        assert image.width > 0


def test_uploads_are_split_across_messages_by_size_and_count():
    data = noisy_png(64)
    uploads = fit([data] * 4, size_limit=len(data) * 2, stem="job")
    groups = batches(uploads, size_limit=len(data) * 2)
    assert [len(g) for g in groups] == [2, 2]
    many = fit([data] * 12, size_limit=len(data) * 100, stem="job")
    assert [len(g) for g in batches(many, len(data) * 100)] == [MAX_ATTACHMENTS, 2]
