"""backends.untrusted against a real aiohttp server on 127.0.0.1 and real Pillow images."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import socket
import ssl
import struct
import subprocess
import threading
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from PIL import Image, ImageFile

from backends import untrusted
from backends.untrusted import (
    FetchPolicy,
    ImageFacts,
    ImageLimits,
    TooManyPixels,
    address_refusal,
    check_image,
    check_image_sync,
    checked_seed,
    clean_upstream_text,
    decode_base64_image,
    fetch_images,
)
from jobs.backend import BadOutput, Unavailable

PRIVATE_OK = FetchPolicy(allow_private=True)


def encode(fmt: str, size: tuple[int, int] = (8, 8), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, "white" if mode != "1" else 0).save(out, format=fmt)
    return out.getvalue()


PNG = encode("PNG")
# Its header says 10000×10000 (100 MP); all-black 1-bit pixels compress to a few kB.
BOMB = encode("PNG", (10000, 10000), mode="1")
EXPIRED_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Request has expired</Message></Error>"
)


@dataclass
class ImageServer:
    """A local stand-in for an object store: what it serves, and what it was asked."""

    base: str = ""
    hits: Counter[str] = field(default_factory=Counter)
    headers: list[dict[str, str]] = field(default_factory=list)
    failures_left: int = 0


@pytest.fixture
async def server():
    state = ImageServer()

    async def record(request: web.Request) -> None:
        state.hits[request.path] += 1
        state.headers.append(dict(request.headers))

    async def ok(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(body=PNG, content_type="image/png")

    async def numbered(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(body=PNG, content_type="image/png")

    async def octet(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(body=PNG, content_type="binary/octet-stream")

    async def expired(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=403, body=EXPIRED_XML, content_type="application/xml")

    async def html(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="<html>not an image</html>", content_type="text/html")

    async def xml_as_image(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(body=EXPIRED_XML, content_type="image/png")

    async def big(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(body=PNG + b"\0" * 5000, content_type="image/png")

    async def big_chunked(request: web.Request) -> web.StreamResponse:
        await record(request)
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(200):  # 200 kB, no Content-Length: the reader must stop by itself
            await response.write(b"\0" * 1024)
        await response.write_eof()
        return response

    async def bomb(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(body=BOMB, content_type="image/png")

    async def redirect(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPFound(request.query["to"])

    async def loop(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPFound("/loop")

    async def flaky(request: web.Request) -> web.Response:
        await record(request)
        if state.failures_left > 0:
            state.failures_left -= 1
            return web.Response(status=503, text="busy")
        return web.Response(body=PNG, content_type="image/png")

    app = web.Application()
    app.router.add_get("/ok.png", ok)
    app.router.add_get("/n/{n}.png", numbered)
    app.router.add_get("/octet", octet)
    app.router.add_get("/expired.png", expired)
    app.router.add_get("/page", html)
    app.router.add_get("/xml-as-image", xml_as_image)
    app.router.add_get("/big.png", big)
    app.router.add_get("/big-chunked.png", big_chunked)
    app.router.add_get("/bomb.png", bomb)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/loop", loop)
    app.router.add_get("/flaky.png", flaky)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.base = f"http://127.0.0.1:{port}"
    yield state
    await runner.cleanup()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Self-signed certificates (made by the openssl CLI) for `localhost` and for a name this
    machine does not have."""
    folder = tmp_path_factory.mktemp("tls")
    files: dict[str, Path] = {}
    for name in ("localhost", "cdn.example"):
        cert, key = folder / f"{name}.pem", folder / f"{name}.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", f"/CN={name}",
             "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        files[name], files[f"{name}.key"] = cert, key
    return files


async def tls_server(cert: Path, key: Path) -> tuple[web.AppRunner, int]:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png", headers={"X-Host": request.host})

    app = web.Application()
    app.router.add_get("/ok.png", ok)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


@pytest.mark.parametrize("served_as", ["localhost", "cdn.example"])
async def test_https_is_pinned_with_the_real_name_for_sni_and_certificate(
    tls_files: dict[str, Path], served_as: str
) -> None:
    """The connection goes to the checked IP, yet TLS still verifies the URL's host name:
    a certificate for another name is refused (BadOutput, not retried)."""
    runner, port = await tls_server(tls_files[served_as], tls_files[f"{served_as}.key"])
    trust = ssl.create_default_context(cafile=str(tls_files[served_as]))
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as s:
            url = f"https://localhost:{port}/ok.png"
            if served_as == "localhost":
                assert await fetch_images(s, [url], expected=1, policy=PRIVATE_OK) == (PNG,)
            else:
                with pytest.raises(BadOutput, match="TLS refused"):
                    await fetch_images(s, [url], expected=1, policy=PRIVATE_OK)
    finally:
        await runner.cleanup()


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


# -- addresses --------------------------------------------------------------------------------

ADDRESSES = [
    # address, refused without allow_private, refused with allow_private
    ("8.8.8.8", False, False),
    ("1.1.1.1", False, False),
    ("2606:4700:4700::1111", False, False),
    ("127.0.0.1", True, False),
    ("127.8.9.10", True, False),
    ("10.1.2.3", True, False),
    ("172.16.0.1", True, False),
    ("172.31.255.255", True, False),
    ("192.168.1.10", True, False),
    ("100.64.0.1", True, False),  # carrier-grade NAT
    ("169.254.1.1", True, False),
    ("::1", True, False),
    ("fe80::1", True, False),
    ("fe80::1%eth0", True, False),
    ("fc00::1", True, False),
    ("fd12:3456::1", True, False),
    ("::ffff:127.0.0.1", True, False),
    ("::ffff:10.0.0.1", True, False),
    ("2002:7f00:1::", True, False),  # 6to4 around 127.0.0.1
    ("64:ff9b::a00:1", True, False),  # NAT64 around 10.0.0.1
    ("::ffff:8.8.8.8", False, False),
    ("169.254.169.254", True, True),  # cloud metadata: never
    ("::ffff:169.254.169.254", True, True),
    ("fd00:ec2::254", True, True),
    ("0.0.0.0", True, True),
    ("::", True, True),
    ("224.0.0.1", True, True),
    ("ff02::1", True, True),
    ("255.255.255.255", True, True),
    ("240.0.0.1", True, True),
    ("not-an-address", True, True),
]


@pytest.mark.parametrize(("address", "refused", "refused_private"), ADDRESSES)
def test_address_refusal(address: str, refused: bool, refused_private: bool) -> None:
    assert (address_refusal(address) is not None) is refused
    assert (address_refusal(address, allow_private=True) is not None) is refused_private


@pytest.mark.parametrize(
    ("base_url", "allow_private"),
    [
        ("https://api.omniinfer.io", False),
        ("https://api.novita.ai/v3", False),
        ("http://127.0.0.1:7860", True),
        ("http://[::1]:7860", True),
        ("http://192.168.1.20:7860/", True),
        ("http://localhost:7860", True),
        ("http://gpu-box:7860", True),
        ("http://forge.local:7860", True),
        ("http://sd.home.arpa", True),
        ("http://8.8.8.8", False),
        ("http://169.254.169.254", False),  # never allowed, so never "private"
        ("not a url", False),
    ],
)
def test_policy_for_base_url(base_url: str, allow_private: bool) -> None:
    assert FetchPolicy.for_base_url(base_url).allow_private is allow_private


# -- fetching ---------------------------------------------------------------------------------


async def test_fetches_a_real_png(server: ImageServer, session: aiohttp.ClientSession) -> None:
    images = await fetch_images(session, [f"{server.base}/ok.png"], expected=1, policy=PRIVATE_OK)
    assert images == (PNG,)


async def test_generic_binary_type_is_accepted_when_it_decodes(server, session) -> None:
    images = await fetch_images(session, [f"{server.base}/octet"], expected=1, policy=PRIVATE_OK)
    assert images == (PNG,)


async def test_loopback_refused_without_allow_private(server, session) -> None:
    with pytest.raises(BadOutput, match="loopback"):
        await fetch_images(session, [f"{server.base}/ok.png"], expected=1, policy=FetchPolicy())
    assert server.hits["/ok.png"] == 0  # refused before connecting


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://[::1]:9/a.png", "loopback"),
        ("http://[::ffff:169.254.169.254]/latest/", "metadata"),
        ("http://[fe80::1%25eth0]/a.png", "link-local"),
        ("http://10.0.0.7/a.png", "private"),
    ],
)
async def test_literal_addresses_are_judged_without_dns(
    session, monkeypatch: pytest.MonkeyPatch, url: str, reason: str
) -> None:
    async def no_dns(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("an IP literal needs no lookup")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_dns)
    with pytest.raises(BadOutput, match=reason):
        await fetch_images(session, [url], expected=1, policy=FetchPolicy())


async def test_a_name_ending_in_a_digit_is_looked_up(
    session, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked_up: list[str] = []

    async def private_answer(host, port, **kwargs):  # type: ignore[no-untyped-def]
        looked_up.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.168.1.5", port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", private_answer)
    with pytest.raises(BadOutput, match="gpu1 is a private address"):
        await fetch_images(session, ["http://gpu1/a.png"], expected=1, policy=FetchPolicy())
    assert looked_up == ["gpu1"]


async def test_expired_link_403_xml_is_bad_output(server, session) -> None:
    with pytest.raises(BadOutput, match="HTTP 403") as caught:
        await fetch_images(
            session,
            [f"{server.base}/expired.png?X-Amz-Signature=s3cr3t"],
            expected=1,
            policy=PRIVATE_OK,
        )
    assert "s3cr3t" not in caught.value.message  # the query string holds the credentials
    assert server.hits["/expired.png"] == 1  # a 4xx is not retried


async def test_html_is_refused(server, session) -> None:
    with pytest.raises(BadOutput, match="text/html"):
        await fetch_images(session, [f"{server.base}/page"], expected=1, policy=PRIVATE_OK)


async def test_xml_labelled_as_image_fails_decoding(server, session) -> None:
    with pytest.raises(BadOutput, match="not a PNG, JPEG or WebP"):
        await fetch_images(session, [f"{server.base}/xml-as-image"], expected=1, policy=PRIVATE_OK)


@pytest.mark.parametrize("path", ["/big.png", "/big-chunked.png"])
async def test_oversized_body_is_refused(server, session, path: str) -> None:
    limits = ImageLimits(max_bytes=4096)
    with pytest.raises(BadOutput, match="over 4096 bytes"):
        await fetch_images(
            session, [server.base + path], expected=1, policy=PRIVATE_OK, limits=limits
        )


async def test_pixel_bomb_is_refused(server, session) -> None:
    with pytest.raises(BadOutput, match="10000×10000"):
        await fetch_images(session, [f"{server.base}/bomb.png"], expected=1, policy=PRIVATE_OK)


async def test_redirect_to_loopback_refused_without_allow_private(
    server, session, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Let 127.0.0.1 stand in for a public CDN; the rest of 127/8 stays loopback.
    real = untrusted.address_refusal

    def cdn_is_public(address, *, allow_private=False):  # type: ignore[no-untyped-def]
        return None if str(address) == "127.0.0.1" else real(address, allow_private=allow_private)

    monkeypatch.setattr(untrusted, "address_refusal", cdn_is_public)
    port = server.base.rsplit(":", 1)[1]
    for target in (f"http://127.0.0.2:{port}/ok.png", "http://169.254.169.254/latest/meta-data/"):
        with pytest.raises(BadOutput, match=r"loopback|metadata"):
            await fetch_images(
                session,
                [f"{server.base}/redirect?to={target}"],
                expected=1,
                policy=FetchPolicy(),
            )
    assert server.hits["/redirect"] == 2  # the first hop was fetched, the second refused
    assert server.hits["/ok.png"] == 0


async def test_redirect_to_loopback_allowed_with_allow_private(server, session) -> None:
    url = f"{server.base}/redirect?to={server.base}/ok.png"
    assert await fetch_images(session, [url], expected=1, policy=PRIVATE_OK) == (PNG,)
    assert server.hits["/redirect"] == 1 and server.hits["/ok.png"] == 1


async def test_redirect_to_another_scheme_is_refused(server, session) -> None:
    url = f"{server.base}/redirect?to=file:///etc/passwd"
    with pytest.raises(BadOutput, match="only http"):
        await fetch_images(session, [url], expected=1, policy=PRIVATE_OK)


async def test_redirect_loop_stops(server, session) -> None:
    with pytest.raises(BadOutput, match="more than 5 redirects"):
        await fetch_images(session, [f"{server.base}/loop"], expected=1, policy=PRIVATE_OK)
    assert server.hits["/loop"] == 6


async def test_hundred_urls_expected_one_downloads_one(server, session) -> None:
    urls = [f"{server.base}/n/{i}.png" for i in range(100)]
    assert await fetch_images(session, urls, expected=1, policy=PRIVATE_OK) == (PNG,)
    assert sum(server.hits.values()) == 1 and server.hits["/n/0.png"] == 1


async def test_several_images_keep_their_order(server, session) -> None:
    urls = ["", f"{server.base}/n/0.png", "  ", f"{server.base}/octet", f"{server.base}/n/2.png"]
    images = await fetch_images(session, urls, expected=3, policy=PRIVATE_OK)
    assert images == (PNG, PNG, PNG)
    assert server.hits == Counter({"/n/0.png": 1, "/octet": 1, "/n/2.png": 1})


@pytest.mark.parametrize("urls", [[], [""], ["", "   "], [None]])
async def test_nothing_to_fetch_is_bad_output(session, urls) -> None:
    with pytest.raises(BadOutput, match="no image URLs"):
        await fetch_images(session, urls, expected=2, policy=PRIVATE_OK)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "data:image/png;base64,AAAA",
        "http://user:pw@example.com/a.png",
        "http:///nohost",
    ],
)
async def test_unfetchable_urls_are_refused(session, url: str) -> None:
    with pytest.raises(BadOutput):
        await fetch_images(session, [url], expected=1, policy=PRIVATE_OK)


async def test_a_5xx_is_retried(server, session) -> None:
    server.failures_left = 1
    assert await fetch_images(
        session, [f"{server.base}/flaky.png"], expected=1, policy=PRIVATE_OK
    ) == (PNG,)
    assert server.hits["/flaky.png"] == 2


async def test_persistent_5xx_is_unavailable(server, session) -> None:
    server.failures_left = 100
    with pytest.raises(Unavailable, match="HTTP 503"):
        await fetch_images(session, [f"{server.base}/flaky.png"], expected=1, policy=PRIVATE_OK)
    assert server.hits["/flaky.png"] == untrusted.DOWNLOAD_ATTEMPTS


async def test_connection_refused_is_unavailable(session) -> None:
    with socket_closed_port() as port, pytest.raises(Unavailable):
        await fetch_images(
            session, [f"http://127.0.0.1:{port}/a.png"], expected=1, policy=PRIVATE_OK
        )


async def test_named_host_is_pinned_and_keeps_its_host_header(server, session) -> None:
    port = server.base.rsplit(":", 1)[1]
    url = f"http://localhost:{port}/ok.png"
    assert await fetch_images(session, [url], expected=1, policy=PRIVATE_OK) == (PNG,)
    assert server.headers[-1]["Host"] == f"localhost:{port}"


async def test_session_credentials_are_never_sent(server) -> None:
    async with aiohttp.ClientSession(
        headers={"Authorization": "Bearer the-api-key-123", "X-OmniInfer-Key": "k" * 20},
        auth=None,
    ) as keyed:
        await fetch_images(keyed, [f"{server.base}/ok.png"], expected=1, policy=PRIVATE_OK)
        assert not keyed.closed
    sent = {name.lower() for name in server.headers[-1]}
    assert "authorization" not in sent and "x-omniinfer-key" not in sent


# -- check_image ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
async def test_check_image_accepts_the_three_formats(fmt: str) -> None:
    facts = await check_image(encode(fmt, (12, 7)))
    assert facts == ImageFacts(width=12, height=7, format=fmt)


async def test_check_image_refuses_other_formats_and_junk() -> None:
    for data in (encode("GIF"), encode("BMP"), EXPIRED_XML, b"\x89PNG\r\n\x1a\n"):
        with pytest.raises(BadOutput):
            await check_image(data)


async def test_check_image_refuses_a_truncated_image() -> None:
    noise = Image.frombytes("RGB", (256, 256), os.urandom(256 * 256 * 3))
    for fmt in ("JPEG", "PNG"):
        out = io.BytesIO()
        noise.save(out, format=fmt)
        with pytest.raises(BadOutput, match="does not decode"):
            await check_image(out.getvalue()[: out.tell() // 2])


async def test_check_image_refuses_pixels_before_decoding(monkeypatch) -> None:
    loads: list[str] = []
    real_load = ImageFile.ImageFile.load

    def counting_load(self):  # type: ignore[no-untyped-def]
        loads.append(self.format)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    with pytest.raises(TooManyPixels, match="10000×10000 pixels, over the 16000000 allowed"):
        await check_image(BOMB)
    assert loads == []  # refused from the header: nothing decoded
    with pytest.raises(BadOutput, match="over the 63 allowed"):
        await check_image(PNG, ImageLimits(max_pixels=63))
    assert await check_image(PNG, ImageLimits(max_pixels=64)) == ImageFacts(8, 8, "PNG")
    assert loads == []  # a PNG is proved whole by its checksums, not decoded
    assert await check_image(encode("JPEG")) == ImageFacts(8, 8, "JPEG")
    assert loads == ["JPEG"]  # a JPEG has no checksums: decoded in full


async def test_check_image_refuses_a_png_whose_bytes_were_changed() -> None:
    noise = Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3))
    out = io.BytesIO()
    noise.save(out, format="PNG")
    damaged = bytearray(out.getvalue())
    damaged[len(damaged) // 2] ^= 0xFF  # inside the pixel data
    with pytest.raises(BadOutput, match="PNG image does not decode"):
        await check_image(bytes(damaged))
    without_end = out.getvalue()[:-12]  # the IEND chunk cut off
    with pytest.raises(BadOutput, match="PNG image does not decode"):
        await check_image(without_end)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROWS_8X8 = (b"\x00" + bytes(range(24))) * 8  # 8 rows of 8 RGB pixels, each with filter "none"
# (width, rows) of each of Adam7's seven passes over an 8×8 image, in order
ADAM7_8X8 = [(1, 1), (1, 1), (2, 1), (2, 2), (4, 2), (4, 4), (8, 4)]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: its length, type, data and a valid CRC."""
    checksum = struct.pack(">I", zlib.crc32(kind + body))
    return struct.pack(">I", len(body)) + kind + body + checksum


def png_with_pixel_stream(
    width: int, height: int, stream: bytes | None, *, interlace: int = 0
) -> bytes:
    """An RGB PNG whose checksums are all valid, with `stream` as its pixel data (no IDAT
    chunk when None), interlaced with Adam7 when `interlace` is 1."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, interlace)
    pixels = b"" if stream is None else png_chunk(b"IDAT", stream)
    return PNG_SIGNATURE + png_chunk(b"IHDR", header) + pixels + png_chunk(b"IEND", b"")


def split_png() -> list[bytes]:
    """The chunks of a valid 8×8 PNG as an upstream may send it: its pixel stream in two IDAT
    chunks, then a text chunk, which Pillow reads only after the pixels."""
    stream = zlib.compress(ROWS_8X8)
    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    return [
        png_chunk(b"IHDR", header),
        png_chunk(b"IDAT", stream[:20]),
        png_chunk(b"IDAT", stream[20:]),
        png_chunk(b"tEXt", b"parameters\0a lighthouse"),
        png_chunk(b"IEND", b""),
    ]


SPLIT_PNG = PNG_SIGNATURE + b"".join(split_png())


@pytest.mark.parametrize(
    ("index", "why"),
    [
        (0, "its IHDR chunk fails its checksum"),
        (2, "its IDAT chunk fails its checksum"),
        (3, "its tEXt chunk fails its checksum"),
        (4, "its IEND chunk fails its checksum"),
    ],
    ids=["IHDR", "IDAT", "tEXt", "IEND"],
)
async def test_check_image_refuses_a_png_whose_chunk_fails_its_crc(index: int, why: str) -> None:
    chunks = split_png()
    assert await check_image(PNG_SIGNATURE + b"".join(chunks)) == ImageFacts(8, 8, "PNG")
    chunks[index] = chunks[index][:-1] + bytes([chunks[index][-1] ^ 1])  # its CRC, a bit off
    with pytest.raises(BadOutput, match=why):
        await check_image(PNG_SIGNATURE + b"".join(chunks))


def test_check_image_sync_refuses_a_png_with_any_byte_changed() -> None:
    """Every byte of a PNG is its signature, a chunk's length or under a CRC: a change
    anywhere is refused, always as BadOutput."""
    for index in range(len(SPLIT_PNG)):
        damaged = bytearray(SPLIT_PNG)
        damaged[index] ^= 0x10
        with pytest.raises(BadOutput):
            check_image_sync(bytes(damaged))


async def test_check_image_refuses_a_png_cut_short_anywhere() -> None:
    for end in range(len(SPLIT_PNG)):
        with pytest.raises(BadOutput):
            await check_image(SPLIT_PNG[:end])
    with pytest.raises(BadOutput, match="no IEND"):
        await check_image(SPLIT_PNG[:-12])
    with pytest.raises(BadOutput, match="its tEXt chunk runs past the end"):
        await check_image(SPLIT_PNG[:-20])


@pytest.mark.parametrize("length", [36, 2**31 - 1, 2**32 - 1])
async def test_check_image_refuses_a_chunk_whose_length_runs_past_the_end(length: int) -> None:
    """The tEXt chunk's 23 bytes, its CRC and the IEND chunk after it leave room for 35."""
    chunks = split_png()
    chunks[3] = struct.pack(">I", length) + chunks[3][4:]
    with pytest.raises(BadOutput, match="its tEXt chunk runs past the end"):
        await check_image(PNG_SIGNATURE + b"".join(chunks))


async def test_check_image_refuses_a_png_that_does_not_start_with_its_header() -> None:
    chunks = split_png()
    text_first = PNG_SIGNATURE + chunks[3] + b"".join(chunks[:3]) + chunks[4]
    with pytest.raises(BadOutput, match="does not start with its IHDR chunk"):
        await check_image(text_first)


@pytest.mark.parametrize(
    ("stream", "why"),
    [
        (None, "no pixel data"),  # no IDAT chunk at all
        (zlib.compress(b""), "cut short"),  # a stream of nothing
        (zlib.compress(bytes(1 + 8 * 3) * 7), "cut short"),  # 7 rows of 8
        (zlib.compress(bytes(1 + 8 * 3) * 9), "cut short or too long"),  # 9 rows of 8
        (zlib.compress((b"\x07" + bytes(8 * 3)) * 8), "no valid filter"),
    ],
    ids=["no IDAT", "empty", "short", "long", "bad filter"],
)
async def test_check_image_refuses_a_png_whose_pixel_stream_does_not_fit_its_size(
    stream: bytes | None, why: str
) -> None:
    with pytest.raises(BadOutput, match=why):
        await check_image(png_with_pixel_stream(8, 8, stream))


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ((8, 8, 3, 2, 0, 0, 0), "unknown pixel format \\(colour type 2, 3 bits\\)"),
        ((8, 8, 16, 3, 0, 0, 0), "unknown pixel format \\(colour type 3, 16 bits\\)"),
        ((8, 8, 8, 5, 0, 0, 0), "unknown pixel format \\(colour type 5, 8 bits\\)"),
        ((0, 8, 8, 2, 0, 0, 0), "size of 0×8"),
        ((8, 2**31, 8, 2, 0, 0, 0), "size of 8×2147483648"),
        ((8, 8, 8, 2, 1, 0, 0), "unknown compression or filter method"),
        ((8, 8, 8, 2, 0, 1, 0), "unknown compression or filter method"),
    ],
    ids=["depth", "palette depth", "colour type", "no width", "too tall", "compression", "filter"],
)
async def test_check_image_refuses_a_png_whose_header_png_does_not_define(
    fields: tuple[int, ...], why: str
) -> None:
    """The header is checked as a decoder would read it, with valid checksums and pixels."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", *fields))
    png = PNG_SIGNATURE + header + png_chunk(b"IDAT", zlib.compress(ROWS_8X8))
    with pytest.raises(BadOutput, match=why):
        await check_image(png + png_chunk(b"IEND", b""))


def ihdr(width: int, height: int, colour_type: int = 2, depth: int = 8) -> bytes:
    return png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0))


PIXELS_8X8 = png_chunk(b"IDAT", zlib.compress(ROWS_8X8))
PALETTE = png_chunk(b"PLTE", bytes(3 * 4))
GREY_8X8 = png_chunk(b"IDAT", zlib.compress((b"\0" + bytes(8)) * 8))


@pytest.mark.parametrize(
    ("chunks", "why"),
    [
        ([ihdr(8, 8), ihdr(5000, 5000), PIXELS_8X8], "a second IHDR"),
        ([ihdr(8, 8), ihdr(4, 4), PIXELS_8X8], "a second IHDR"),
        ([ihdr(8, 8), PIXELS_8X8, ihdr(4, 4)], "a second IHDR"),
        ([ihdr(8, 8, colour_type=3), GREY_8X8], "no palette before its pixels"),
        ([ihdr(8, 8, colour_type=3), PALETTE, PALETTE, GREY_8X8], "a second PLTE"),
        ([ihdr(8, 8), PIXELS_8X8, PALETTE], "PLTE after its pixels"),
        ([ihdr(8, 8, colour_type=0), PALETTE, GREY_8X8], "PLTE in a grey image"),
        ([ihdr(8, 8, colour_type=3), png_chunk(b"PLTE", bytes(4)), GREY_8X8], "PLTE of 4 bytes"),
        ([ihdr(8, 8, colour_type=3), png_chunk(b"PLTE", bytes(771)), GREY_8X8], "PLTE of 771"),
        (
            [
                ihdr(8, 8),
                png_chunk(b"IDAT", zlib.compress(ROWS_8X8)[:10]),
                png_chunk(b"tEXt", b"a\0b"),
                png_chunk(b"IDAT", zlib.compress(ROWS_8X8)[10:]),
            ],
            "pixel data is split by other chunks",
        ),
        ([ihdr(8, 8), png_chunk(b"ABCD", b""), PIXELS_8X8], "unknown critical chunk ABCD"),
    ],
    ids=[
        "second IHDR over the limit",
        "second IHDR",
        "IHDR after the pixels",
        "palette image without PLTE",
        "second PLTE",
        "PLTE after IDAT",
        "PLTE in grey",
        "short PLTE",
        "long PLTE",
        "IDAT split",
        "unknown critical chunk",
    ],
)
async def test_check_image_refuses_a_png_whose_chunks_a_decoder_would_read_otherwise(
    chunks: list[bytes], why: str
) -> None:
    """The check reads the image a decoder would: one IHDR (Pillow takes the last one, so a
    second could hide the real size), a palette where and when PNG wants one, the pixel
    data in one run, and no critical chunk it does not know (decoders must stop there).
    All checksums valid."""
    with pytest.raises(BadOutput, match=why):
        await check_image(PNG_SIGNATURE + b"".join(chunks) + png_chunk(b"IEND", b""))


async def test_check_image_accepts_a_palette_png_and_ancillary_chunks() -> None:
    png = [ihdr(8, 8, colour_type=3), png_chunk(b"sRGB", b"\0"), PALETTE, png_chunk(b"tRNS", b"\0"),
           GREY_8X8, png_chunk(b"tEXt", b"a\0b"), png_chunk(b"IEND", b"")]  # fmt: skip
    assert await check_image(PNG_SIGNATURE + b"".join(png)) == ImageFacts(8, 8, "PNG")


async def test_check_image_accepts_a_png_whose_pixel_stream_fits_its_size() -> None:
    png = png_with_pixel_stream(8, 8, zlib.compress(ROWS_8X8))
    assert await check_image(png) == ImageFacts(8, 8, "PNG")


def padded_with_empty_blocks(rows: bytes, blocks: int) -> bytes:
    """A zlib stream of `rows` that first holds `blocks` empty deflate blocks: valid, but
    each costs zlib work and gives no pixel (a stream made to hold the check)."""
    raw = zlib.compressobj(wbits=-15)  # deflate alone: the zlib header and checksum added here
    empty_stored_block = b"\x00\x00\x00\xff\xff"  # not final, stored, 0 bytes long
    deflated = empty_stored_block * blocks + raw.compress(rows) + raw.flush()
    return b"\x78\x9c" + deflated + struct.pack(">I", zlib.adler32(rows))


async def test_check_image_inflates_a_few_bytes_of_a_png_beyond_its_rows_at_most() -> None:
    """An encoder needs a few bytes beyond the pixels (zlib's header, stored blocks'); a
    stream padded with 400 KB of empty blocks is refused without inflating them all (it
    would hold the loop 150 ms per 2 MiB of dynamic ones)."""
    assert await check_image(png_with_pixel_stream(8, 8, padded_with_empty_blocks(ROWS_8X8, 100)))
    padded = png_with_pixel_stream(8, 8, padded_with_empty_blocks(ROWS_8X8, 80_000))
    with pytest.raises(BadOutput, match="cut short"):
        await check_image(padded)


async def test_check_image_holds_a_small_interlaced_png_to_its_seven_passes() -> None:
    """Interlaced, the pixel stream is Adam7's seven passes of rows, each pass narrower than
    the image: a small image's stream must inflate to exactly them, each row with a valid
    filter. No other interlacing exists."""
    rows = [b"\x00" + bytes(3 * width) for width, count in ADAM7_8X8 for _ in range(count)]
    whole = png_with_pixel_stream(8, 8, zlib.compress(b"".join(rows)), interlace=1)
    with Image.open(io.BytesIO(whole)) as im:
        im.load()  # Pillow decodes it: a valid image
    assert await check_image(whole) == ImageFacts(8, 8, "PNG")
    short = png_with_pixel_stream(8, 8, zlib.compress(b"".join(rows[:-1])), interlace=1)
    with pytest.raises(BadOutput, match="cut short"):
        await check_image(short)
    bad_filter = b"".join(rows[:-1]) + b"\x07" + rows[-1][1:]
    with pytest.raises(BadOutput, match="no valid filter"):
        await check_image(png_with_pixel_stream(8, 8, zlib.compress(bad_filter), interlace=1))
    with pytest.raises(BadOutput, match="unknown interlace method 2"):
        await check_image(png_with_pixel_stream(8, 8, zlib.compress(b"".join(rows)), interlace=2))


async def test_check_image_refuses_a_png_whose_pixel_data_is_not_a_stream() -> None:
    """Random bytes in place of the pixel data, with valid checksums: as an upstream that
    means harm could make them."""
    noise = os.urandom(4096)
    chunk = b"IDAT" + noise
    idat = struct.pack(">I", len(noise)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    png = PNG[:33] + idat + b"\x00\x00\x00\x00IEND\xaeB`\x82"  # signature and IHDR kept
    with pytest.raises(BadOutput, match="PNG image does not decode"):
        await check_image(png)


async def test_check_image_refuses_empty_and_too_many_bytes() -> None:
    with pytest.raises(BadOutput, match="empty"):
        await check_image(b"")
    with pytest.raises(BadOutput, match="bytes"):
        await check_image(PNG, ImageLimits(max_bytes=len(PNG) - 1))


@pytest.fixture(scope="module")
def big_png() -> bytes:
    """A 1024² PNG of random pixels, which PNG cannot compress: over INLINE_CHECK_BYTES."""
    noise = Image.frombytes("RGB", (1024, 1024), os.urandom(1024 * 1024 * 3))
    out = io.BytesIO()
    noise.save(out, format="PNG", compress_level=1)
    assert out.tell() > untrusted.INLINE_CHECK_BYTES
    return out.getvalue()


@pytest.fixture
def check_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread each `check_image_sync` call ran in, as they come."""
    names: list[str] = []
    real = untrusted.check_image_sync

    def recorded(data: bytes, limits: ImageLimits) -> ImageFacts:
        names.append(threading.current_thread().name)
        return real(data, limits)

    monkeypatch.setattr(untrusted, "check_image_sync", recorded)
    return names


async def test_check_image_checks_a_small_png_on_the_loop(
    check_threads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PNG of at most INLINE_CHECK_BYTES is checked without the hop to a thread (its CPU,
    system calls and wake-up of the loop), holding the loop for under a millisecond."""
    loop_thread = threading.current_thread().name
    assert await check_image(SPLIT_PNG) == ImageFacts(8, 8, "PNG")
    assert check_threads == [loop_thread]
    monkeypatch.setattr(untrusted, "INLINE_CHECK_BYTES", len(SPLIT_PNG))
    await check_image(SPLIT_PNG)
    assert check_threads[1] == loop_thread
    monkeypatch.setattr(untrusted, "INLINE_CHECK_BYTES", len(SPLIT_PNG) - 1)
    await check_image(SPLIT_PNG)
    assert check_threads[2].startswith("image-check")


@pytest.mark.parametrize("fmt", ["big PNG", "JPEG", "WEBP"])
async def test_check_image_checks_a_big_png_and_every_jpeg_and_webp_on_the_image_threads(
    check_threads: list[str], big_png: bytes, fmt: str
) -> None:
    data = big_png if fmt == "big PNG" else encode(fmt)
    await check_image(data)
    assert len(check_threads) == 1 and check_threads[0].startswith("image-check")


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (b"iCCP", b"a profile\0\0" + zlib.compress(bytes(1_000_000))),
        (b"zTXt", b"Comment\0\0" + zlib.compress(bytes(1_000_000))),
        (b"iTXt", b"Comment\0\x01\0\0\0" + b"not a zlib stream"),
    ],
    ids=["iCCP", "zTXt", "iTXt"],
)
async def test_check_image_never_inflates_a_pngs_profile_or_text_chunks(
    check_threads: list[str], kind: bytes, body: bytes
) -> None:
    """Only the pixel stream is inflated: a compressed profile or text (a megabyte of zeros,
    or no stream at all) is held to its CRC alone, so a PNG made of many is as quick to check
    as any other, on the loop."""
    chunks = split_png()
    png = PNG_SIGNATURE + chunks[0] + png_chunk(kind, body) + b"".join(chunks[1:])
    assert await check_image(png) == ImageFacts(8, 8, "PNG")
    assert check_threads == [threading.current_thread().name]


async def test_check_image_checks_a_png_of_many_chunks_on_the_image_threads(
    check_threads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow, and the check, read each chunk in Python: 170 000 empty ones in 2 MiB would
    hold the loop for a tenth of a second or more."""
    monkeypatch.setattr(untrusted, "INLINE_CHECK_CHUNKS", 5)  # the chunks of SPLIT_PNG
    await check_image(SPLIT_PNG)
    monkeypatch.setattr(untrusted, "INLINE_CHECK_CHUNKS", 4)
    await check_image(SPLIT_PNG)
    assert check_threads[0] == threading.current_thread().name
    assert check_threads[1].startswith("image-check")


async def test_check_image_leaves_the_loop_running(big_png: bytes) -> None:
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await check_image(big_png)
    done.set()
    await task
    assert ticks > 1


# -- small checks -------------------------------------------------------------------------------


def test_decode_base64_image() -> None:
    text = base64.b64encode(PNG).decode()
    assert decode_base64_image(text) == PNG
    assert decode_base64_image(f"data:image/png;base64,{text}") == PNG
    assert decode_base64_image(text.rstrip("=")) == PNG
    assert decode_base64_image(text[:40] + "\n" + text[40:]) == PNG
    for bad in ("", "   ", "not base64!", "data:image/png,rawbytes", "====", None):
        with pytest.raises(BadOutput):
            decode_base64_image(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("invalid key sk-abcdef123456", "invalid key [redacted]"),
        ("sandbox mode", "sandbox mode"),  # a short placeholder key is an ordinary word
        ("line\r\nbreak\x00\x1b[31m red", "line break[31m red"),
        ({"code": 4, "msg": "bad"}, "{'code': 4, 'msg': 'bad'}"),
        (None, "None"),
        ("x" * 400, "x" * 299 + "…"),
    ],
)
def test_clean_upstream_text(text: object, expected: str) -> None:
    assert clean_upstream_text(text, secrets=["sk-abcdef123456", "sandbox", ""]) == expected


def test_clean_upstream_text_limit() -> None:
    assert clean_upstream_text("abcdefghij", limit=5) == "abcd…"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (1834412977, 1834412977),
        (2**32 - 1, 2**32 - 1),
        ("1834412977", 1834412977),
        (" 42 ", 42),
        (2**32, None),
        (-1, None),
        ("-1", None),
        (True, None),
        (12.0, None),
        ("12.5", None),
        ("٣", None),  # a digit, but not an ASCII one
        ("9" * 5000, None),
        (None, None),
        ([1], None),
    ],
)
def test_checked_seed(value: object, expected: int | None) -> None:
    assert checked_seed(value) == expected


class socket_closed_port:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then closed)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        return None
