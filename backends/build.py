"""Builds the backend the settings name (and, in sandbox mode, the emulator it talks to)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from jobs.backend import Backend
from settings import Settings


class Emulator(Protocol):
    """What every bundled emulator offers: start on a port of loopback, stop."""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str: ...
    async def stop(self) -> None: ...


@dataclass
class Built:
    backend: Backend
    base_url: str
    emulator: Emulator | None = field(default=None)

    async def close(self) -> None:
        await self.backend.close()
        if self.emulator is not None:
            with contextlib.suppress(Exception):
                await self.emulator.stop()


async def start_emulator(settings: Settings) -> tuple[Emulator, str]:
    """The sandbox: the chosen backend's emulator, in this process, on a free loopback port."""
    emulator: Emulator
    if settings.backend == "a1111":
        from a1111.emulator import Emulator as A1111Emulator

        emulator = A1111Emulator(duration=settings.sandbox_duration)
    elif settings.backend == "novita":
        from omni.v3.emulator import Emulator as NovitaEmulator

        emulator = NovitaEmulator(api_key=settings.omni_api_key, duration=settings.sandbox_duration)
    else:
        from omni.emulator import Emulator as OmniEmulator

        emulator = OmniEmulator(api_key=settings.omni_api_key, duration=settings.sandbox_duration)
    return emulator, await emulator.start("127.0.0.1", 0)


async def build_backend(settings: Settings, session: aiohttp.ClientSession) -> Built:
    """The backend for `settings.backend`, started (it has read what its servers offer)."""
    emulator: Emulator | None = None
    if settings.sandbox:
        emulator, base_url = await start_emulator(settings)
    else:
        base_url = settings.base_url
    timeout = aiohttp.ClientTimeout(total=settings.omni_timeout, sock_connect=10)
    backend: Backend
    if settings.backend == "a1111":
        from backends.a1111 import A1111Backend

        urls = [base_url] if settings.sandbox else list(settings.a1111_urls)
        backend = A1111Backend(urls, auth=settings.a1111_auth, session=session)
    elif settings.backend == "novita":
        from backends.novita import NovitaBackend

        backend = NovitaBackend(
            settings.omni_api_key, base_url=base_url, session=session, timeout=timeout
        )
    else:
        from backends.omniinfer import OmniinferBackend

        backend = OmniinferBackend(
            settings.omni_api_key, base_url=base_url, session=session, timeout=timeout
        )
    await backend.start()
    return Built(backend, base_url, emulator)
