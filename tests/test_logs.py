"""logs: no secret and no Discord token reaches a log line, through the real logging stack."""

from __future__ import annotations

import base64
import io
import json
import logging
import warnings

import pytest

from logs import RedactingFormatter, configure_logging, redact

BOT_TOKEN = "MTA4NzY1NDMyMTAxMjM0NTY3OA.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789AB"
API_KEY = "sk_live-0123456789abcdef"
A1111_AUTH = "painter:hunter2-but-longer"
SANDBOX = "sandbox"  # the placeholder key: shorter than 8, an ordinary word
APP_ID = "1087654321012345678"
INTERACTION_ID = "1234567890123456789"
INTERACTION_TOKEN = (
    "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDEyMzQ1Njc4OTpSYW5kb21Ub2tlbkJ5dGVzSGVyZV8tQUJDREVGR0g"
)
WEBHOOK_TOKEN = "Xy_9-abcDEF0123456789ghijklmnopQRSTUVwxyz0123456789abcdefGHIJKLmnop"
SECRETS = (BOT_TOKEN, API_KEY, A1111_AUTH, SANDBOX, "")
NEVER = (BOT_TOKEN, API_KEY, A1111_AUTH, "hunter2-but-longer", INTERACTION_TOKEN, WEBHOOK_TOKEN)


@pytest.fixture
def root_logging():
    """Leave the root logger as it was (configure_logging replaces its handlers); let the
    "discord" loggers through meanwhile (other test modules quieten them on import)."""
    root, discord = logging.getLogger(), logging.getLogger("discord")
    handlers, level, discord_level = root.handlers[:], root.level, discord.level
    discord.setLevel(logging.NOTSET)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    discord.setLevel(discord_level)
    logging.captureWarnings(False)


@pytest.fixture
def output(root_logging) -> io.StringIO:
    stream = io.StringIO()
    configure_logging("debug", SECRETS, stream=stream)
    return stream


def assert_clean(text: str) -> None:
    for secret in NEVER:
        assert secret not in text


def test_discord_http_debug_lines_lose_their_tokens(output: io.StringIO) -> None:
    http = logging.getLogger("discord.http")
    webhook = logging.getLogger("discord.webhook.async_")
    base = "https://discord.com/api/v10"
    original = f"{base}/webhooks/{APP_ID}/{INTERACTION_TOKEN}/messages/@original"
    callback = f"{base}/interactions/{INTERACTION_ID}/{INTERACTION_TOKEN}/callback"
    followup = f"{base}/webhooks/{APP_ID}/{INTERACTION_TOKEN}?wait=true"
    # The shapes of discord.py 2.x's own DEBUG lines (http.py and webhook/async_.py).
    http.debug("%s %s with %s has returned %s", "POST", callback, '{"type": 5}', 204)
    webhook.debug(
        "Webhook ID %s with %s %s has returned status code %s", APP_ID, "PATCH", original, 200
    )
    webhook.debug("Webhook ID %s with %s %s has returned status code %s", APP_ID, "POST",
                  followup, 200)  # fmt: skip
    http.debug("%s %s has received %s", "GET", f"{base}/webhooks/42/{WEBHOOK_TOKEN}", {"id": 42})
    text = output.getvalue()
    assert_clean(text)
    assert f"POST {base}/interactions/{INTERACTION_ID}/[token]/callback with" in text
    assert f"PATCH {base}/webhooks/{APP_ID}/[token]/messages/@original has returned" in text
    assert f"/webhooks/{APP_ID}/[token]?wait=true has returned status code 200" in text
    assert f"GET {base}/webhooks/42/[token] has received {{'id': 42}}" in text
    assert text.count("DEBUG discord.") == 4


def test_gateway_payload_tokens_are_removed(output: io.StringIO) -> None:
    event = {"id": INTERACTION_ID, "token": INTERACTION_TOKEN, "type": 2}
    payload = json.dumps({"t": "INTERACTION_CREATE", "d": event})
    logging.getLogger("discord.gateway").debug("WebSocket Event: %s", payload)
    logging.getLogger("discord.gateway").debug("as a dict: %r", {"token": INTERACTION_TOKEN})
    text = output.getvalue()
    assert_clean(text)
    assert '"token": "[token]", "type": 2' in text
    assert "as a dict: {'token': '[token]'}" in text


def test_configured_secrets_are_redacted_at_every_level(output: io.StringIO) -> None:
    log = logging.getLogger("omni.client")
    log.debug("calling with key %s", API_KEY)
    log.info("login with %s done", BOT_TOKEN)
    log.warning("a1111 auth %s refused", A1111_AUTH)
    log.error("password alone hunter2-but-longer, url-encoded painter%3Ahunter2-but-longer")
    log.critical("basic %s", base64.b64encode(A1111_AUTH.encode()).decode())
    text = output.getvalue()
    assert_clean(text)
    assert "painter%3A" not in text
    assert base64.b64encode(A1111_AUTH.encode()).decode().rstrip("=") not in text
    assert "calling with key [redacted]" in text
    assert "login with [redacted] done" in text
    assert "a1111 auth [redacted] refused" in text
    assert "password alone [redacted], url-encoded [redacted]" in text
    for level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        assert f" {level} omni.client: " in text


def test_a_short_placeholder_is_not_a_secret(output: io.StringIO) -> None:
    logging.getLogger("bot").info("running in sandbox mode")
    assert "running in sandbox mode" in output.getvalue()


def test_exception_text_is_redacted(output: io.StringIO) -> None:
    log = logging.getLogger("jobs.runner")
    try:
        raise RuntimeError(f"upstream echoed {API_KEY} for /webhooks/{APP_ID}/{INTERACTION_TOKEN}")
    except RuntimeError:
        log.exception("job failed")
    text = output.getvalue()
    assert_clean(text)
    assert "ERROR jobs.runner: job failed" in text
    assert "Traceback (most recent call last)" in text
    assert f"RuntimeError: upstream echoed [redacted] for /webhooks/{APP_ID}/[token]" in text


def test_stack_info_is_redacted(output: io.StringIO) -> None:
    def leaky(url: str) -> None:
        logging.getLogger("x").info("here", stack_info=True)

    leaky(f"/interactions/{INTERACTION_ID}/{INTERACTION_TOKEN}/callback")
    assert "Stack (most recent call last)" in output.getvalue()
    assert_clean(output.getvalue())


def test_header_and_query_credentials(output: io.StringIO) -> None:
    log = logging.getLogger("aiohttp.client")
    log.debug("headers %r", {"Authorization": "Bot some.other.token-value", "Accept": "x"})
    log.debug("Authorization: Bearer abc.def-ghi")
    log.debug("GET https://api.omniinfer.io/v2/progress?task_id=7&key=legacykey123")
    log.debug("GET https://s3.example/a.png?X-Amz-Signature=deadbeef&X-Amz-Expires=3600")
    text = output.getvalue()
    for secret in ("some.other.token-value", "abc.def-ghi", "legacykey123", "deadbeef"):
        assert secret not in text
    assert "{'Authorization': 'Bot [redacted]', 'Accept': 'x'}" in text
    assert "Authorization: Bearer [redacted]" in text
    assert "?task_id=7&key=[redacted]" in text
    assert "?X-Amz-Signature=[redacted]&X-Amz-Expires=3600" in text


def test_level_is_applied_and_checked(root_logging) -> None:
    stream = io.StringIO()
    configure_logging("WARNING", SECRETS, stream=stream)
    logging.getLogger("discord.http").debug("hidden %s", API_KEY)
    logging.getLogger("discord.http").warning("shown")
    assert "hidden" not in stream.getvalue() and "shown" in stream.getvalue()
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("LOUD", SECRETS, stream=stream)


def test_warnings_are_logged_redacted(output: io.StringIO) -> None:
    warnings.warn(f"deprecated call with {API_KEY}", UserWarning, stacklevel=1)
    text = output.getvalue()
    assert "WARNING py.warnings" in text and "deprecated call with [redacted]" in text
    assert_clean(text)


def test_formatter_alone_and_redact_are_idempotent() -> None:
    formatter = RedactingFormatter("%(message)s", [API_KEY])
    record = logging.LogRecord("n", logging.INFO, __file__, 1, "k=%s", (API_KEY,), None)
    assert formatter.format(record) == "k=[redacted]"
    once = redact(f"/webhooks/1/{WEBHOOK_TOKEN} Authorization: Bot {BOT_TOKEN}")
    assert redact(once) == once == "/webhooks/1/[token] Authorization: Bot [redacted]"


def test_text_without_secrets_is_untouched() -> None:
    line = (
        "job 1a2b3c4d: POST https://api.omniinfer.io/v2/txt2img returned 200 in 0.41s; "
        "the token bucket has 3 left; webhooks/abc/def is not a Discord path"
    )
    assert redact(line, [API_KEY]) == line
