"""Checks on everything an image API returns, before it is posted or stored.

An API's answer is data from outside: its image URLs may point anywhere (the cloud metadata
service, the bot's own machine), its "images" may be an expired link's XML error page or a
100-megapixel decompression bomb, its text may echo the API key. Every adapter in `backends/`
passes what it receives through this module, and raises `BadOutput` (the output itself is
wrong: nothing is posted) or `Unavailable` (the network failed: safe to try again later).

- `fetch_images(session, urls, expected=, policy=)` → checked image bytes, in URL order.
- `check_image(bytes)` → `ImageFacts`; the pixel count is read from the header and refused
  before anything is decoded; a PNG is then proved whole by its checksums, the order of its
  critical chunks and the start of its pixel stream, in one pass (on the loop when it is
  small), a JPEG or WebP by decoding it in a worker thread.
- `decode_base64_image`, `clean_upstream_text`, `checked_seed`: the small checks on JSON fields.
- `address_refusal(address)`: why the bot must not connect to an IP address (pure; no DNS).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import io
import ipaddress
import logging
import random
import re
import socket
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
from PIL import Image, UnidentifiedImageError
from yarl import URL

from jobs.backend import BadOutput, Unavailable

log = logging.getLogger(__name__)

IMAGE_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})
MAX_REDIRECTS = 5
MAX_CONCURRENT_DOWNLOADS = 4
DOWNLOAD_ATTEMPTS = 3
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10, sock_read=20)
MIN_SECRET_LENGTH = 8
"""Shorter "secrets" (a sandbox's placeholder key) are not replaced: they are ordinary words."""

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# Object stores often label images as generic bytes; the decode check decides then.
_GENERIC_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})
# Headers that carry nothing about the bot's accounts: a session with any other default
# header (an API key, Authorization) is never used for a download.
_HARMLESS_DEFAULT_HEADERS = frozenset(
    {"user-agent", "accept", "accept-encoding", "accept-language", "connection"}
)
_METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, DigitalOcean
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
    }
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_PRIVATE_NAME_SUFFIXES = (".localhost", ".local", ".lan", ".internal", ".home.arpa", ".intranet")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Pillow warns of an image over its own threshold (89 MP) as it opens it; `open_image` refuses
# anything over ImageLimits.max_pixels (16 MP) right after, so the warning is only noise. Set
# once here: `warnings.catch_warnings` around each open is not safe with the image threads
# and the loop opening images at the same time.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class TooManyPixels(BadOutput):
    """The image's header gives more than the allowed width × height (nothing was decoded)."""


@dataclass(frozen=True)
class ImageLimits:
    """Per image: `max_bytes` of encoded data, `max_pixels` = width × height (read from the
    header, refused before decoding)."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 16_000_000


@dataclass(frozen=True)
class ImageFacts:
    """What a checked image is: size in pixels and Pillow's format name ("PNG", "JPEG", "WEBP")."""

    width: int
    height: int
    format: str


@dataclass(frozen=True)
class FetchPolicy:
    """Where image URLs may lead. `allow_private` admits loopback, private and link-local
    addresses (the emulator on 127.0.0.1, a LAN server); the other checks still apply, and
    the cloud metadata service, multicast, broadcast and 0.0.0.0 are refused even then."""

    allow_private: bool = False

    @classmethod
    def for_base_url(cls, base_url: str) -> FetchPolicy:
        """`allow_private` when the API itself is served from a non-public host: an IP literal
        that is loopback/private/link-local, `localhost`, a single-label name or a LAN suffix
        (.local, .lan, .internal, .home.arpa). Names are judged without DNS, so a LAN server
        behind an ordinary-looking name gets the public policy."""
        try:
            host = URL(base_url).host
        except (ValueError, TypeError):
            return cls()
        if not host:
            return cls()
        host = host.rstrip(".").lower()
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            private_name = (
                host == "localhost" or "." not in host or host.endswith(_PRIVATE_NAME_SUFFIXES)
            )
            return cls(allow_private=private_name)
        return cls(
            allow_private=address_refusal(address) is not None
            and address_refusal(address, allow_private=True) is None
        )


def address_refusal(address: str | IPAddress, *, allow_private: bool = False) -> str | None:
    """Why the bot must not connect to `address`, or None when it may.

    Always refused: unspecified (0.0.0.0, ::), multicast, broadcast, reserved, and the cloud
    metadata addresses. Refused unless `allow_private`: loopback, private (RFC 1918, ULA),
    link-local, shared (100.64/10) and any other non-global range. IPv4 embedded in IPv6
    (mapped ::ffff:a.b.c.d, 6to4, NAT64 64:ff9b::/96) is judged as that IPv4 address.
    """
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(ip.compressed.split("%", 1)[0])
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return address_refusal(embedded, allow_private=allow_private)
    if ip in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip == _BROADCAST:
        return "a broadcast address"
    if ip.is_loopback:
        return None if allow_private else "a loopback address"
    if ip.is_link_local:
        return None if allow_private else "a link-local address"
    if ip.is_reserved:
        return "a reserved address"
    if (
        ip.is_private
        or ip in _SHARED_ADDRESS_SPACE
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
    ):
        return None if allow_private else "a private address"
    if not ip.is_global:
        return "a reserved address"
    return None


# -- images -----------------------------------------------------------------------------------

_image_pool: ThreadPoolExecutor | None = None
_image_pool_lock = threading.Lock()
_T = TypeVar("_T")


def _pool() -> ThreadPoolExecutor:
    """Two threads for Pillow, apart from the loop's default executor (DNS lookups use it)."""
    global _image_pool
    with _image_pool_lock:
        if _image_pool is None:
            _image_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="image-check")
        return _image_pool


async def run_in_image_thread(func: Callable[..., _T], /, *args: object) -> _T:
    """Run blocking Pillow work (`func(*args)`) on the image threads, never on the loop."""
    return await asyncio.get_running_loop().run_in_executor(_pool(), func, *args)


# A PNG of at most INLINE_CHECK_BYTES is checked on the loop (when `_checks_quickly` agrees):
# its check costs the same CPU wherever it runs, and on the loop it saves the hop to an image
# thread, measured here at 0.15 ms of CPU per image, 17 system calls (11 of them futex) and one
# more wake-up of the loop. An honest 2 MiB PNG holds the loop for 0.6 ms (zlib.crc32 runs at
# 3.7 GB/s here; then 16 KiB are inflated); a pixel stream is inflated only a little past the
# rows it must give (_INFLATE_SLACK), and no other chunk is inflated at all. Larger PNGs and
# every JPEG and WebP, whose decoding takes milliseconds, are left to the image threads.
INLINE_CHECK_BYTES = 2 * 1024 * 1024
# ... made of at most this many chunks: the check reads each in Python (in 2 MiB, 170 000
# empty chunks would cost 0.1 s). libpng's 8 KiB pixel chunks make about 260 in 2 MiB.
INLINE_CHECK_CHUNKS = 512


async def check_image(data: bytes, limits: ImageLimits = ImageLimits()) -> ImageFacts:
    """Prove `data` is one PNG/JPEG/WebP image within `limits` (see `check_image_sync`).

    A PNG that `_checks_quickly` admits (at most INLINE_CHECK_BYTES and INLINE_CHECK_CHUNKS)
    is checked right here on the loop, which saves the hop to a thread and holds the loop
    for under a millisecond (its only inflating is of 16 KiB of pixel rows). Larger PNGs,
    and every JPEG and WebP (decoded in full), are checked on the image threads.

    Raises `BadOutput` when it is too many bytes, not an image, another format or does not
    decode, and its subclass `TooManyPixels` when the header gives more than
    `limits.max_pixels` pixels (nothing is decoded then).
    """
    if not data:
        raise BadOutput("the image is empty")
    if len(data) > limits.max_bytes:
        raise BadOutput(f"the image is {len(data)} bytes, over the {limits.max_bytes} allowed")
    if _checks_quickly(data):
        return check_image_sync(data, limits)
    return await run_in_image_thread(check_image_sync, data, limits)


def check_image_sync(data: bytes, limits: ImageLimits = ImageLimits()) -> ImageFacts:
    """`check_image` without the choice of thread. Blocks: call it in a worker thread, or on
    the loop only for data `_checks_quickly` admits, as `check_image` does (see
    INLINE_CHECK_BYTES for how long that holds the loop).

    A PNG is proved whole by its own checksums (every chunk's CRC, IHDR to IEND), the order
    of its critical chunks (`_CriticalChunks`) and its pixel stream by inflating its start,
    in one pass over its chunks, without Pillow and without decoding the pixels: under
    0.1 ms of CPU for a 1024² PNG against about 5 ms to decode it, which was the most
    expensive step of a job. Its header must give a size within `limits` and a pixel format
    PNG defines. The stream must inflate to its first 16 KiB of rows, each starting with a
    valid filter; an image smaller than that, to exactly its size. What this lets through
    is a larger stream made on purpose to go wrong after its first 16 KiB, or a damaged
    ancillary chunk (text, profile), with valid checksums: it would be posted as it is, and
    is never decoded here. JPEG and WebP carry no checksums, so they are decoded in full.
    """
    if len(data) > limits.max_bytes:
        raise BadOutput(f"the image is {len(data)} bytes, over the {limits.max_bytes} allowed")
    if data.startswith(_PNG_SIGNATURE):
        return _check_png(data, limits)
    with open_image(data, limits) as im:
        facts = ImageFacts(width=im.width, height=im.height, format=str(im.format))
        try:
            im.load()
        except Exception as exc:  # Pillow raises many kinds on damaged data
            raise BadOutput(f"the {im.format} image does not decode ({exc})") from None
        return facts


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Bytes of a PNG's pixel stream inflated to check it is one: five rows of a 1024-wide RGB
# image. More proves nothing more (a stream made to go wrong further on passes either way);
# 64 KiB cost 25 µs more per 1024² image, a quarter of its check.
_INFLATE_PROBE = 16 * 1024
# Compressed bytes inflated beyond the rows wanted, at most: an encoder needs a few (zlib's
# header and checksum, 5 per 64 KiB stored block), while a stream of empty blocks made to
# keep zlib rebuilding its tables would hold the loop for 150 ms per 2 MiB.
_INFLATE_SLACK = 1024
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type: grey, RGB, palette, ...
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_PNG_FILTERS = 5  # a row starts with its filter: none, sub, up, average or Paeth
# Adam7, the interlacing: each pass takes the pixels from (x, y) on, every dx-th of every dy-th.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))  # fmt: skip
_NOT_INTERLACED = ((0, 0, 1, 1),)


def _checks_quickly(data: bytes) -> bool:
    """Whether `data` is a PNG whose check is sure to be short enough to run on the loop: at
    most INLINE_CHECK_BYTES and INLINE_CHECK_CHUNKS chunks. Reads the chunk headers only; a
    PNG cut short is refused as quickly."""
    if len(data) > INLINE_CHECK_BYTES or not data.startswith(_PNG_SIGNATURE):
        return False
    position = len(_PNG_SIGNATURE)
    for _ in range(INLINE_CHECK_CHUNKS):
        if position + 8 > len(data):
            return True
        length, kind = struct.unpack_from(">I4s", data, position)
        if kind == b"IEND":
            return True
        position += 12 + length  # length and type, the data, its CRC
    return False


def _check_png(data: bytes, limits: ImageLimits) -> ImageFacts:
    """Prove a PNG whole (see `check_image_sync`) in one pass over its chunks, copying none:
    IHDR first (its size within `limits`, else `TooManyPixels`), every chunk's CRC up to
    IEND, and the start of the pixel stream its IDAT chunks hold. Raises only `BadOutput`."""
    with memoryview(data) as view:
        chunks = _png_chunks(view)
        kind, header = next(chunks)
        if kind != b"IHDR" or len(header) != 13:
            raise _damaged_png("it does not start with its IHDR chunk")
        width, height, depth, colour_type, compression, filtering, interlace = struct.unpack(
            ">IIBBBBB", header
        )
        if not (0 < width < 2**31 and 0 < height < 2**31):  # PNG's own bounds
            raise _damaged_png(f"its header gives a size of {width}×{height}")
        if width * height > limits.max_pixels:
            raise TooManyPixels(
                f"the image is {width}×{height} pixels, over the {limits.max_pixels} allowed"
            )
        if depth not in _PNG_DEPTHS.get(colour_type, ()):
            raise BadOutput(
                f"the PNG image has an unknown pixel format (colour type {colour_type}, "
                f"{depth} bits)"
            )
        if compression or filtering:
            raise _damaged_png("its header names an unknown compression or filter method")
        if interlace > 1:
            raise _damaged_png(f"it has an unknown interlace method {interlace}")
        pixels = _PixelProbe(
            _png_passes(width, height, depth, _PNG_CHANNELS[colour_type], interlace)
        )
        order = _CriticalChunks(colour_type)
        for kind, body in chunks:
            order.see(kind, len(body))
            if kind == b"IDAT":
                pixels.feed(body)
        pixels.check()
    return ImageFacts(width=width, height=height, format="PNG")


class _CriticalChunks:
    """PNG's rules for the chunks a decoder needs, after IHDR, so that the check reads the
    image a decoder would: no second IHDR (Pillow takes the last, which could hide the real
    size), one palette of whole entries before the pixels where PNG has one, the pixel data
    in one run, and no critical chunk it does not know (a decoder must stop there). The
    ancillary chunks (text, profile, transparency...) are held to their CRC alone, as
    decoders skip a damaged one."""

    def __init__(self, colour_type: int) -> None:
        self.colour_type = colour_type
        self.palette = False
        self.pixels = False  # an IDAT seen
        self.after_pixels = False  # and another chunk after it

    def see(self, kind: bytes, length: int) -> None:
        if kind == b"IDAT":
            if self.after_pixels:
                raise _damaged_png("its pixel data is split by other chunks")
            if self.colour_type == 3 and not self.palette:
                raise _damaged_png("the palette image has no palette before its pixels")
            self.pixels = True
            return
        self.after_pixels = self.pixels
        if kind == b"IHDR":
            raise _damaged_png("it has a second IHDR chunk")
        if kind == b"PLTE":
            self._palette(length)
        elif kind != b"IEND" and kind[:1].isupper():  # an upper-case first letter: critical
            raise _damaged_png(f"it has an unknown critical chunk {kind.decode()}")

    def _palette(self, length: int) -> None:
        if self.palette:
            raise _damaged_png("it has a second PLTE chunk")
        if self.pixels:
            raise _damaged_png("it has a PLTE after its pixels")
        if self.colour_type in (0, 4):
            raise _damaged_png("it has a PLTE in a grey image")
        if not length or length % 3 or length > 3 * 256:
            raise _damaged_png(f"it has a PLTE of {length} bytes")
        self.palette = True


def _png_chunks(view: memoryview) -> Iterator[tuple[bytes, memoryview]]:
    """The chunks of the PNG in `view` as (type, data), up to and with IEND, each proved by
    its CRC (what follows IEND is ignored, as decoders do). `BadOutput` for a chunk that
    runs past the end or fails its CRC, and for a PNG with no IEND."""
    position, end = len(_PNG_SIGNATURE), len(view)
    while position + 8 <= end:
        length, kind = struct.unpack_from(">I4s", view, position)
        stop = position + 8 + length
        if not kind.isalpha():
            raise _damaged_png("a chunk has no valid type")
        if stop + 4 > end:
            raise _damaged_png(f"its {kind.decode()} chunk runs past the end of the data")
        if zlib.crc32(view[position + 4 : stop]) != struct.unpack_from(">I", view, stop)[0]:
            raise _damaged_png(f"its {kind.decode()} chunk fails its checksum")
        yield kind, view[position + 8 : stop]
        if kind == b"IEND":
            return
        position = stop + 4
    raise _damaged_png("it is cut short (no IEND chunk)")


def _png_passes(
    width: int, height: int, depth: int, channels: int, interlace: int
) -> list[tuple[int, int]]:
    """Each pass of a PNG's pixel stream as (bytes per row, filter byte included; rows): one
    pass, or Adam7's seven (the empty ones left out) when interlaced."""
    passes = []
    for x, y, dx, dy in _ADAM7 if interlace else _NOT_INTERLACED:
        columns, rows = -(-(width - x) // dx), -(-(height - y) // dy)  # rounded up
        if columns > 0 and rows > 0:
            passes.append((1 + (columns * channels * depth + 7) // 8, rows))
    return passes


class _PixelProbe:
    """The start of a PNG's pixel stream, inflated from its IDAT chunks as they come: its
    first 16 KiB of rows or, for a smaller image, all its rows and one byte more if there is
    one (then it is too long)."""

    def __init__(self, passes: list[tuple[int, int]]) -> None:
        self.passes = passes
        self.size = sum(length * count for length, count in passes)
        self.small = self.size <= _INFLATE_PROBE
        self.wanted = self.size + 1 if self.small else _INFLATE_PROBE
        self.inflater = zlib.decompressobj()
        self.rows = bytearray()
        self.compressed = 0
        self.budget = self.wanted + _INFLATE_SLACK  # compressed bytes inflated at most

    def feed(self, data: memoryview) -> None:
        fed = self.compressed
        self.compressed += len(data)
        if len(self.rows) >= self.wanted or self.inflater.eof or fed >= self.budget:
            return
        try:
            self.rows += self.inflater.decompress(
                data[: self.budget - fed], self.wanted - len(self.rows)
            )
        except zlib.error as exc:
            raise _damaged_png(f"its pixel data is not a zlib stream: {exc}") from None

    def check(self) -> None:
        """`BadOutput` unless the stream held what the image's size and layout ask for."""
        if not self.compressed:
            raise BadOutput("the PNG image has no pixel data")
        if self.small:
            whole = len(self.rows) == self.size and self.inflater.eof
        else:
            whole = len(self.rows) >= self.wanted
        if not whole:
            raise BadOutput("the PNG image's pixel data is cut short or too long")
        if self._has_bad_filter():
            raise BadOutput("the PNG image's pixel data has rows with no valid filter")

    def _has_bad_filter(self) -> bool:
        """Whether a row inflated so far (of any pass) starts with no valid filter type."""
        start = 0
        for length, count in self.passes:
            end = min(start + length * count, len(self.rows))
            if start < end and max(self.rows[start:end:length]) >= _PNG_FILTERS:
                return True
            start += length * count
        return False


def _damaged_png(reason: str) -> BadOutput:
    return BadOutput(f"the PNG image does not decode ({reason})")


def open_image(data: bytes, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Pillow's lazy `Image.open` of `data`, refused unless PNG/JPEG/WebP within
    `limits.max_pixels` (`TooManyPixels`, else `BadOutput`); nothing is decoded yet. The
    caller closes it. Blocks: call it in a worker thread."""
    try:
        im = Image.open(io.BytesIO(data), formats=sorted(IMAGE_FORMATS))
    except Image.DecompressionBombError:
        raise TooManyPixels(f"the image has more than {limits.max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise BadOutput("the data is not a PNG, JPEG or WebP image") from None
    width, height = im.size
    if width <= 0 or height <= 0 or width * height > limits.max_pixels:
        im.close()
        raise TooManyPixels(
            f"the image is {width}×{height} pixels, over the {limits.max_pixels} allowed"
        )
    return im


_DATA_URI = re.compile(r"^data:[^,]*?;base64,", re.IGNORECASE)
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=\-_]")


def decode_base64_image(text: str) -> bytes:
    """The bytes of a base64 image: plain (A1111's `images`) or a `data:...;base64,` URI
    (A1111's live preview). Whitespace and missing padding are tolerated; the result is not
    yet checked as an image (see `check_image`). Raises `BadOutput`."""
    if not isinstance(text, str) or not text.strip():
        raise BadOutput("the image is missing (no base64 data)")
    body = text.strip()
    match = _DATA_URI.match(body)
    if match:
        body = body[match.end() :]
    elif body[:5].lower() == "data:":
        raise BadOutput("the image data URI is not base64")
    body = "".join(body.split())
    if not body or _NOT_BASE64.search(body):
        raise BadOutput("the image is not valid base64")
    body = body.rstrip("=")
    body += "=" * (-len(body) % 4)
    try:
        if "-" in body or "_" in body:
            data = base64.urlsafe_b64decode(body)
        else:
            data = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise BadOutput("the image is not valid base64") from None
    if not data:
        raise BadOutput("the image is empty")
    return data


# -- text and numbers ---------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def clean_upstream_text(text: object, *, secrets: Iterable[str] = (), limit: int = 300) -> str:
    """`str(text)` made safe to log or show: each secret of 8+ characters replaced by
    "[redacted]", control and bidi characters removed, whitespace runs collapsed to one space,
    cut to `limit` characters with "…"."""
    try:
        result = text if isinstance(text, str) else str(text)
    except Exception:  # an upstream object whose __str__ fails still gets a message
        result = f"<{type(text).__name__}>"
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len)[::-1]:
        result = result.replace(secret, "[redacted]")
    result = _CONTROL.sub("", result)
    result = " ".join(result.split())
    if len(result) > limit:
        result = result[: max(0, limit - 1)].rstrip() + "…"
    return result


def checked_seed(value: object) -> int | None:
    """The seed in `value` when it is an int (not a bool) or a string of digits within
    0..2**32-1 (Novita sends seeds as strings); otherwise None (use the requested seed)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        seed = value
    elif isinstance(value, str):
        digits = value.strip()
        if not digits.isascii() or not digits.isdigit() or len(digits) > 10:
            return None
        seed = int(digits)
    else:
        return None
    return seed if 0 <= seed <= 2**32 - 1 else None


# -- downloads ----------------------------------------------------------------------------------


class _Retryable(Exception):
    """A network fault or a 5xx: the same URL may work on the next attempt."""


async def fetch_images(
    session: aiohttp.ClientSession,
    urls: Sequence[str],
    *,
    expected: int,
    policy: FetchPolicy,
    limits: ImageLimits = ImageLimits(),
) -> tuple[bytes, ...]:
    """Download and check the images at `urls`, a few at a time; the result keeps URL order.

    Empty (or non-string) entries are dropped and at most `expected` URLs are fetched. Each
    must be http(s) to an address `policy` admits, with every address its name resolves to
    checked and the connection made to a checked address (no second lookup to rebind), and
    each redirect (at most 5) checked the same way. Then: HTTP 200, an image (or generic
    binary) content type, at most `limits.max_bytes`, and `check_image`. `session`'s default
    headers and auth are never sent: a session carrying any gets a clean one instead.

    Raises `BadOutput` (no URL left, a forbidden URL or address, a 4xx such as an expired
    link's 403, not an image, too large) or `Unavailable` (network faults or 5xx after
    3 attempts). URLs in messages lose their query string (presigned links hold credentials).
    """
    wanted = [url for url in urls if isinstance(url, str) and url.strip()][: max(expected, 0)]
    if not wanted:
        raise BadOutput("the API returned no image URLs")
    parsed = [_parsed_url(url.strip()) for url in wanted]  # all refused before any is fetched
    if _session_is_clean(session):
        return await _fetch_all(session, parsed, policy, limits)
    async with aiohttp.ClientSession() as clean:
        return await _fetch_all(clean, parsed, policy, limits)


async def _fetch_all(
    session: aiohttp.ClientSession, urls: list[URL], policy: FetchPolicy, limits: ImageLimits
) -> tuple[bytes, ...]:
    if len(urls) == 1:  # the usual job: no tasks, gate or gather to pay for
        return (await _fetch_checked(session, urls[0], policy, limits),)
    gate = asyncio.Semaphore(MAX_CONCURRENT_DOWNLOADS)

    async def one(url: URL) -> bytes:
        async with gate:
            return await _fetch_checked(session, url, policy, limits)

    tasks = [asyncio.ensure_future(one(url)) for url in urls]
    try:
        return tuple(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:  # one failed: the others are no longer wanted
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _session_is_clean(session: aiohttp.ClientSession) -> bool:
    return (
        session.auth is None
        and all(name.lower() in _HARMLESS_DEFAULT_HEADERS for name in session.headers)
        and len(session.cookie_jar) == 0
        and getattr(session, "_base_url", None) is None
        and not getattr(session, "_raise_for_status", False)
    )


async def _fetch_checked(
    session: aiohttp.ClientSession, url: URL, policy: FetchPolicy, limits: ImageLimits
) -> bytes:
    last: _Retryable | None = None
    for attempt in range(DOWNLOAD_ATTEMPTS):
        if attempt:
            await asyncio.sleep(random.uniform(0.0, min(2.0, 0.25 * 2**attempt)))
        try:
            data = await _follow(session, url, policy, limits)
        except _Retryable as exc:
            last = exc
            log.info("image download %s failed (%s), attempt %d", _short(url), exc, attempt + 1)
            continue
        await check_image(data, limits)
        return data
    raise Unavailable(f"could not download image {_short(url)}: {last}")


async def _follow(
    session: aiohttp.ClientSession, url: URL, policy: FetchPolicy, limits: ImageLimits
) -> bytes:
    """GET `url` (its shape already checked), following up to MAX_REDIRECTS redirects by
    hand, each hop checked."""
    current = url
    for hop in range(MAX_REDIRECTS + 1):
        if hop:
            _check_url_shape(current)
        addresses = await _checked_addresses(current, policy)
        status, location, body = await _get_pinned(session, current, addresses, limits)
        if status in _REDIRECTS:
            if not location:
                raise BadOutput(f"image {_short(current)}: HTTP {status} without a Location")
            try:
                current = current.join(URL(location))
            except (ValueError, TypeError):
                raise BadOutput(f"image {_short(current)}: unusable redirect") from None
            continue
        return body
    raise BadOutput(f"image {_short(url)}: more than {MAX_REDIRECTS} redirects")


async def _checked_addresses(url: URL, policy: FetchPolicy) -> list[str]:
    """Every address `url`'s host resolves to, each admitted by `policy` (else `BadOutput`)."""
    host = url.raw_host or ""
    literal = _literal(host)
    checked: list[str | IPAddress]
    if literal is not None:
        checked = [literal]
    else:
        try:
            found = await asyncio.get_running_loop().getaddrinfo(
                host, url.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except (socket.gaierror, UnicodeError) as exc:
            raise _Retryable(f"cannot resolve {host}: {exc}") from None
        checked = list(dict.fromkeys(str(info[4][0]) for info in found))
        if not checked:
            raise _Retryable(f"cannot resolve {host}")
    for address in checked:
        reason = address_refusal(address, allow_private=policy.allow_private)
        if reason is not None:
            raise BadOutput(f"image {_short(url)}: refused, {host} is {reason}")
    return [str(address) for address in checked]


async def _get_pinned(
    session: aiohttp.ClientSession, url: URL, addresses: list[str], limits: ImageLimits
) -> tuple[int, str | None, bytes]:
    """GET `url` connected to one of `addresses` (tried in order), sending its real host name
    as Host and for TLS (SNI and certificate). Returns (status, Location, body)."""
    host = url.raw_host or ""
    named = _literal(host) is None
    headers = {"Accept": "image/png, image/jpeg, image/webp, image/*;q=0.8"}
    if named:
        headers["Host"] = host if url.is_default_port() else f"{host}:{url.port}"
    last: Exception | None = None
    for address in addresses:
        target = url.with_host(address) if named else url
        try:
            async with session.get(
                target,
                headers=headers,
                allow_redirects=False,
                timeout=DOWNLOAD_TIMEOUT,
                server_hostname=host if named and url.scheme == "https" else None,
                auth=None,
            ) as response:
                return await _read(response, url, limits)
        except aiohttp.ClientSSLError as exc:  # a wrong certificate is no network fault
            raise BadOutput(f"image {_short(url)}: TLS refused ({type(exc).__name__})") from None
        except aiohttp.ClientConnectorError as exc:  # this address refused: try the next one
            last = exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise _Retryable(type(exc).__name__) from None
    raise _Retryable(f"cannot connect to {host} ({type(last).__name__})")


async def _read(
    response: aiohttp.ClientResponse, url: URL, limits: ImageLimits
) -> tuple[int, str | None, bytes]:
    status = response.status
    if status in _REDIRECTS:
        return status, response.headers.get("Location"), b""
    if status in _RETRY_STATUSES or status >= 500:
        raise _Retryable(f"HTTP {status}")
    if status != 200:
        hint = " (expired link?)" if status in (401, 403, 404, 410) else ""
        raise BadOutput(f"image {_short(url)}: HTTP {status}{hint}")
    content_type = response.content_type.lower()
    if not content_type.startswith("image/") and content_type not in _GENERIC_TYPES:
        raise BadOutput(f"image {_short(url)}: content type {content_type!r}, not an image")
    if (response.content_length or 0) > limits.max_bytes:
        raise BadOutput(f"image {_short(url)}: over {limits.max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():  # as it arrives: fewer, larger pieces
        size += len(chunk)
        if size > limits.max_bytes:
            raise BadOutput(f"image {_short(url)}: over {limits.max_bytes} bytes")
        chunks.append(chunk)
    return status, None, b"".join(chunks)  # the body copied once


def _parsed_url(text: str) -> URL:
    """`text` parsed once, for every later step, and refused unless `_check_url_shape` passes."""
    try:
        url = URL(text)
    except (ValueError, TypeError):
        raise BadOutput("refusing an image URL that does not parse") from None
    _check_url_shape(url)
    return url


def _check_url_shape(url: URL) -> None:
    try:
        host = url.raw_host
    except (ValueError, TypeError):
        raise BadOutput("refusing an image URL that does not parse") from None
    if url.scheme not in ("http", "https") or not host:
        raise BadOutput(f"refusing image URL {_short(url)}: only http(s) URLs are fetched")
    if url.user is not None or url.password is not None:
        raise BadOutput(f"refusing image URL {_short(url)}: it carries credentials")


@functools.lru_cache(maxsize=256)  # an upstream serves its images from a few hosts
def _literal(host: str) -> IPAddress | None:
    """`host` as an IP address, or None for a name. Only a host that could be one (ending in
    a digit, or holding a colon) is parsed, so the usual name costs no exception."""
    if not (host[-1:].isdigit() or ":" in host):
        return None
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _short(url: str | URL) -> str:
    """The URL without user info or query string (presigned links carry credentials there),
    at most 120 characters."""
    try:
        parsed = URL(url) if isinstance(url, str) else url
        text = str(parsed.with_query(None).with_fragment(None).with_user(None))
    except (ValueError, TypeError):
        text = "<unparsable URL>"
    return clean_upstream_text(text, limit=120)
