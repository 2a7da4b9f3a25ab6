"""The cache's narrow interface and the records that cross it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import orjson


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A provider's answer as it was received, with what a run needs to account for it."""

    body: bytes  # the response body exactly as the provider sent it (JSON)
    model: str
    prompt_tokens: int
    completion_tokens: int
    created_at: float


@dataclass(frozen=True, slots=True)
class CacheStats:
    """What a cache holds. `entries` are servable; `expired` wait for `clear` to remove them."""

    entries: int
    expired: int
    bytes: int  # body bytes of every stored entry, expired ones included
    hits_recorded: int
    oldest_created_at: float | None
    newest_created_at: float | None


EMPTY_STATS = CacheStats(0, 0, 0, 0, None, None)


class ResponseCache(Protocol):
    """Where answers are kept between runs. Time is passed in, so tests move it."""

    @property
    def label(self) -> str:
        """Which backend and where, safe to log (no password)."""
        ...

    async def get(self, key: str, now: float) -> CachedResponse | None:
        """The live entry under `key` (counting a hit), or None; a corrupt entry is a miss."""
        ...

    async def put(self, key: str, entry: CachedResponse, now: float, ttl_s: float) -> None:
        """Store `entry` under `key` for `ttl_s` seconds (math.inf: no expiry), replacing any."""
        ...

    async def stats(self, now: float) -> CacheStats:
        """Counts over every stored entry."""
        ...

    async def clear(self, older_than_s: float | None, now: float) -> int:
        """Delete expired entries and those created before `now - older_than_s` (None: all)."""
        ...

    async def close(self) -> None:
        """Release what the backend opened."""
        ...


def expires_at(now: float, ttl_s: float) -> float | None:
    """When an entry stored at `now` expires; None for never."""
    if not ttl_s > 0:
        raise ValueError(f"cache TTL must be positive, got {ttl_s}")
    return None if math.isinf(ttl_s) else now + ttl_s


def is_expired(expires: float | None, now: float) -> bool:
    """Whether an entry with this expiry may no longer be served."""
    return expires is not None and expires <= now


def check_body(body: bytes) -> bytes:
    """`body` if it is JSON; ValueError otherwise (a cached body the runner cannot parse)."""
    orjson.loads(body)  # orjson.JSONDecodeError is a ValueError
    return body
