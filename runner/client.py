"""The seam to the provider: one async method that sends a request body and returns the answer.

`Transport` is all the engine knows; `runner.http11` is the real one, and tests put the
emulator behind it rather than patching anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

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
