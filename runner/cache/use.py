"""How a run uses the cache: which requests may be served from it, and what that saved."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from runner.cache.policy import CacheMode, cache_key, is_cacheable
from runner.cache.protocol import CachedResponse, ResponseCache


@dataclass
class CacheUse:
    """The run's side of the cache: look-ups, stores and the counters for status."""

    cache: ResponseCache
    mode: CacheMode
    ttl_s: float
    hits: int = 0
    misses: int = 0
    saved: dict[str, tuple[int, int]] = field(default_factory=dict)

    def key_for(self, body: bytes) -> str | None:
        """The cache key of a request body, or None when the request must always be sent."""
        if self.mode == "off":
            return None
        if self.mode == "auto" and b'"temperature":0' not in body:
            # auto needs temperature 0, and bodies are stored compact: most requests are
            # ruled out here without parsing them (which costs a millisecond at 500 KB).
            return None
        parsed = orjson.loads(body)
        return cache_key(parsed) if is_cacheable(parsed, self.mode) else None

    async def lookup(self, key: str, now: float) -> CachedResponse | None:
        """A stored answer for `key`, counting the hit or miss."""
        entry = await self.cache.get(key, now)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        prompt, completion = self.saved.get(entry.model, (0, 0))
        self.saved[entry.model] = (
            prompt + entry.prompt_tokens,
            completion + entry.completion_tokens,
        )
        return entry

    async def remember(
        self, key: str, body: bytes, model: str, usage: tuple[int, int], now: float
    ) -> None:
        """Store a successful answer."""
        entry = CachedResponse(body, model, usage[0], usage[1], now)
        await self.cache.put(key, entry, now, self.ttl_s)

    @property
    def tokens_saved(self) -> int:
        """Tokens the hits would have cost."""
        return sum(p + c for p, c in self.saved.values())
