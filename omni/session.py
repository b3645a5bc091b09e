"""The aiohttp session an API client uses: one shared by the caller, or its own."""

from __future__ import annotations

from typing import Self

import aiohttp


class SessionHolder:
    """Mixed into a client: pass a session to share the process's (its owner closes it), or
    none and the client opens one on first use and closes it in `close()`."""

    _session: aiohttp.ClientSession | None
    _owns_session: bool

    def _hold(self, session: aiohttp.ClientSession | None) -> None:
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session
