"""The seam to the provider: one async method that sends a request body and returns the answer.

`Transport` is all the engine knows; the aiohttp transport is the real one, and tests plug in
the emulator behind it rather than patching anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

import aiohttp

from runner.redact import redact
from runner.sse import IncompleteStream, assemble_stream

USER_AGENT = "runner/0.1 (+bulk chat-completion runner)"


@dataclass(frozen=True, slots=True)
class RawResponse:
    """What came back: status, headers and the (reassembled, if streamed) body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class TransportError(Exception):
    """No usable answer arrived: timeout, connection failure or a broken stream."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Transport(Protocol):
    """Sends one chat-completion request body."""

    async def send(self, body: bytes) -> RawResponse:
        """Send; return the answer, or raise TransportError when none arrived."""
        ...


@dataclass(frozen=True)
class ClientConfig:
    """How to reach the provider."""

    base_url: str
    api_key: str
    timeout_s: float = 120.0
    connect_timeout_s: float = 10.0
    max_connections: int = 64


class AiohttpTransport:
    """One pooled aiohttp session for the whole run."""

    def __init__(self, config: ClientConfig) -> None:
        self._config = config
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        timeout = aiohttp.ClientTimeout(
            total=self._config.timeout_s, sock_connect=self._config.connect_timeout_s
        )
        connector = aiohttp.TCPConnector(
            limit=self._config.max_connections, ttl_dns_cache=300, enable_cleanup_closed=True
        )
        self._session = aiohttp.ClientSession(
            timeout=timeout,
            connector=connector,
            headers={
                "Authorization": f"Bearer {self._config.api_key}",
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
            },
            raise_for_status=False,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, body: bytes) -> RawResponse:
        """POST the body to /chat/completions; streamed answers are reassembled."""
        assert self._session is not None, "use AiohttpTransport as an async context manager"
        try:
            async with self._session.post(self._url, data=body) as response:
                raw = await response.read()
                headers = {k.lower(): v for k, v in response.headers.items()}
                if response.status == 200 and "text/event-stream" in headers.get(
                    "content-type", ""
                ):
                    raw = assemble_stream(raw)
                return RawResponse(response.status, headers, raw)
        except TimeoutError:
            raise TransportError(
                "timeout", f"no answer within {self._config.timeout_s:g}s"
            ) from None
        except IncompleteStream as exc:
            raise TransportError("incomplete_stream", str(exc)) from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            detail = redact(f"{type(exc).__name__}: {exc}", (self._config.api_key,))
            raise TransportError("connection_error", detail) from None
