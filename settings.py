"""The bot's settings: read once from the environment (and `.env`), validated once.

A bad setting is reported as one line naming it and saying how to fix it, never a traceback.
Secrets are kept out of `repr` so a logged Settings object cannot leak them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from yarl import URL

DEFAULT_OMNI_BASE_URL = "https://api.omniinfer.io"
DEFAULT_NOVITA_BASE_URL = "https://api.novita.ai"
BACKENDS = ("omniinfer", "novita", "a1111")
DEFAULT_DATABASE_URL = "sqlite:///data/bot.db"
DEFAULT_SAFETY_NEGATIVE_PROMPT = (
    "nsfw, nude, naked, nipples, explicit, sexual, porn, gore, blood, violence"
)
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{20,}$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
SANDBOX_KEY = "sandbox"


class ConfigError(Exception):
    """Every problem found, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    discord_token: str = field(repr=False)
    omni_api_key: str = field(repr=False)
    omni_base_url: str = DEFAULT_OMNI_BASE_URL
    backend: str = "omniinfer"
    a1111_urls: tuple[str, ...] = ()
    a1111_auth: str | None = field(default=None, repr=False)
    omni_timeout: float = 30.0
    sandbox: bool = False
    sandbox_duration: float = 6.0
    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)
    dev_guild_id: int | None = None
    log_level: str = "INFO"
    account_credit: int | None = 50  # None: unlimited (a self-hosted server costs nothing)
    safety_negative_prompt: str = DEFAULT_SAFETY_NEGATIVE_PROMPT
    max_jobs_in_flight: int = 8
    max_queue_length: int = 100
    owner_ids: frozenset[int] = frozenset()
    instance_id: str | None = None
    lease_seconds: float = 20.0
    lease_renew_seconds: float = 2.0
    shard_count: int | None = None
    shard_ids: tuple[int, ...] | None = None
    retention_days: int = 90

    @property
    def secrets(self) -> tuple[str, ...]:
        """Strings that must never reach a log line (the sandbox's placeholder is not one)."""
        candidates = (self.discord_token, self.omni_api_key, self.a1111_auth)
        return tuple(s for s in candidates if s and s != SANDBOX_KEY)

    @property
    def base_url(self) -> str:
        """The API address of the chosen backend (a1111: the first server of the pool)."""
        if self.backend == "a1111":
            return self.a1111_urls[0] if self.a1111_urls else ""
        return self.omni_base_url


class _Reader:
    """Reads raw values and collects problems instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def text(self, name: str, default: str = "") -> str:
        return self.env.get(name, default).strip() or default

    def flag(self, name: str) -> bool:
        raw = self.text(name, "0").lower()
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw not in ("0", "false", "no", "off"):
            self.problems.append(f"{name}={raw!r} is not a yes/no value: use 1 or 0")
        return False

    def integer(self, name: str, default: int | None, low: int, high: int) -> int | None:
        raw = self.text(name)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            self.problems.append(f"{name}={raw!r} must be a whole number from {low} to {high}")
            return default
        return value

    def id_list(self, name: str) -> list[int]:
        """Comma-separated non-negative whole numbers (user ids, shard ids)."""
        values = []
        for part in self.text(name).split(","):
            part = part.strip()
            if not part:
                continue
            if not part.isdigit():
                self.problems.append(
                    f"{name}: {part!r} is not a whole number; separate with commas"
                )
                continue
            values.append(int(part))
        return values

    def number(self, name: str, default: float, low: float, high: float) -> float:
        raw = self.text(name)
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not low <= value <= high:
            self.problems.append(f"{name}={raw!r} must be a number from {low} to {high}")
            return default
        return value


def _is_http_url(text: str) -> bool:
    parsed = URL(text)
    return parsed.scheme in ("http", "https") and bool(parsed.host)


def load_settings(env: Mapping[str, str]) -> Settings:
    """Build Settings from an environment mapping; raise ConfigError listing every problem."""
    read = _Reader(env)
    sandbox = read.flag("OMNI_SANDBOX")

    token = read.text("DISCORD_TOKEN")
    if not token:
        read.problems.append(
            "DISCORD_TOKEN is not set: copy the bot token from the Discord Developer Portal "
            "(Applications → your app → Bot → Reset Token) into .env"
        )
    elif not _TOKEN_SHAPE.match(token):
        read.problems.append(
            "DISCORD_TOKEN does not look like a bot token (three dot-separated parts): "
            "copy it again from the Developer Portal's Bot page"
        )

    backend = read.text("BACKEND", "omniinfer").lower()
    if backend not in BACKENDS:
        read.problems.append(f"BACKEND={backend!r} must be one of {', '.join(BACKENDS)}")
        backend = "omniinfer"

    api_key = read.text("OMNI_API_KEY")
    if not api_key and not sandbox and backend != "a1111":
        site = "https://novita.ai" if backend == "novita" else "https://omniinfer.io"
        read.problems.append(
            f"OMNI_API_KEY is not set: create a key at {site} (Keys page) and put "
            "it in .env, or set OMNI_SANDBOX=1 to try the bot without spending credit"
        )

    default_base = DEFAULT_NOVITA_BASE_URL if backend == "novita" else DEFAULT_OMNI_BASE_URL
    base_url = read.text("OMNI_BASE_URL", default_base)
    if not _is_http_url(base_url):
        read.problems.append(
            f"OMNI_BASE_URL={base_url!r} is not an http(s) URL: use {default_base}"
        )

    a1111_urls = tuple(
        u.strip().rstrip("/") for u in read.text("A1111_URLS").split(",") if u.strip()
    )
    for url in a1111_urls:
        if not _is_http_url(url):
            read.problems.append(
                f"A1111_URLS: {url!r} is not an http(s) URL: use e.g. http://127.0.0.1:7860"
            )
    if backend == "a1111" and not a1111_urls and not sandbox:
        read.problems.append(
            "A1111_URLS is not set: list your AUTOMATIC1111/Forge servers started with --api, "
            "comma-separated, e.g. http://127.0.0.1:7860"
        )
    a1111_auth = read.text("A1111_AUTH") or None
    if a1111_auth is not None and ":" not in a1111_auth:
        read.problems.append("A1111_AUTH must be user:password (as the servers' --api-auth)")

    credit_raw = read.text("ACCOUNT_CREDIT", "50").lower()
    account_credit: int | None = None
    if credit_raw != "unlimited":
        account_credit = read.integer("ACCOUNT_CREDIT", 50, 0, 10**9)
        if account_credit is None:
            account_credit = 50

    owner_ids = frozenset(read.id_list("OWNER_IDS"))
    shard_count = read.integer("SHARD_COUNT", None, 1, 100_000)
    shard_ids = tuple(read.id_list("SHARD_IDS")) or None
    if shard_ids is not None and shard_count is None:
        read.problems.append("SHARD_IDS needs SHARD_COUNT (the total number of shards)")
    elif shard_ids is not None and shard_count is not None:
        outside = [i for i in shard_ids if i >= shard_count]
        if outside:
            read.problems.append(
                f"SHARD_IDS={outside} must each be below SHARD_COUNT={shard_count}"
            )

    lease_seconds = read.number("LEASE_SECONDS", 20.0, 2.0, 600.0)
    lease_renew_seconds = read.number("LEASE_RENEW_SECONDS", 2.0, 0.1, 300.0)
    if lease_renew_seconds * 2 > lease_seconds:
        read.problems.append(
            f"LEASE_RENEW_SECONDS={lease_renew_seconds:g} must be at most half of "
            f"LEASE_SECONDS={lease_seconds:g}, so one late renewal does not lose the lease"
        )

    database_url = read.text("DATABASE_URL", DEFAULT_DATABASE_URL)
    if not database_url.startswith(("sqlite://", "postgresql://", "postgres://")):
        read.problems.append(
            "DATABASE_URL must start with sqlite:// or postgresql:// "
            f"(default {DEFAULT_DATABASE_URL})"
        )

    log_level = read.text("LOG_LEVEL", "INFO").upper()
    if log_level not in _LOG_LEVELS:
        read.problems.append(f"LOG_LEVEL={log_level!r} must be one of {', '.join(_LOG_LEVELS)}")
        log_level = "INFO"

    settings = Settings(
        discord_token=token,
        omni_api_key=api_key or (SANDBOX_KEY if sandbox else ""),
        omni_base_url=base_url,
        backend=backend,
        a1111_urls=a1111_urls,
        a1111_auth=a1111_auth,
        omni_timeout=read.number("OMNI_TIMEOUT", 30.0, 1.0, 300.0),
        sandbox=sandbox,
        sandbox_duration=read.number("SANDBOX_DURATION", 6.0, 0.1, 120.0),
        database_url=database_url,
        dev_guild_id=read.integer("DEV_GUILD_ID", None, 1, 2**63 - 1),
        log_level=log_level,
        account_credit=account_credit,
        safety_negative_prompt=env.get(
            "SAFETY_NEGATIVE_PROMPT", DEFAULT_SAFETY_NEGATIVE_PROMPT
        ).strip(),
        max_jobs_in_flight=read.integer("MAX_JOBS_IN_FLIGHT", 8, 1, 500) or 8,
        max_queue_length=read.integer("MAX_QUEUE_LENGTH", 100, 1, 100_000) or 100,
        owner_ids=owner_ids,
        instance_id=read.text("INSTANCE_ID") or None,
        lease_seconds=lease_seconds,
        lease_renew_seconds=lease_renew_seconds,
        shard_count=shard_count,
        shard_ids=shard_ids,
        retention_days=read.integer("RETENTION_DAYS", 90, 1, 36_500) or 90,
    )
    if read.problems:
        raise ConfigError(read.problems)
    return settings
