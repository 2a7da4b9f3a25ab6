"""A cache that is never worse than no cache: one failure and the run goes on without it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import anyio

from runner.cache.protocol import EMPTY_STATS, CachedResponse, CacheStats, ResponseCache
from runner.redact import redact

logger = logging.getLogger("runner.cache")

T = TypeVar("T")


class GuardedCache:
    """Wraps a `ResponseCache`: each call gets `timeout_s`; the first error or timeout logs one
    warning and turns the cache off for the rest of the process (get misses, put does nothing,
    stats are empty, clear deletes nothing). `available` tells a command which one happened."""

    def __init__(
        self, inner: ResponseCache, timeout_s: float = 1.0, *, secrets: Iterable[str] = ()
    ) -> None:
        self.inner = inner
        self.timeout_s = timeout_s
        self.available = True
        self._secrets = tuple(s for s in secrets if s)

    @property
    def label(self) -> str:
        """The wrapped backend's label."""
        return self.inner.label

    async def get(self, key: str, now: float) -> CachedResponse | None:
        """The entry under `key`, or None (also when the cache is off or failing)."""
        return await self._guard(lambda: self.inner.get(key, now), None)

    async def put(self, key: str, entry: CachedResponse, now: float, ttl_s: float) -> None:
        """Store the entry if the cache works; otherwise do nothing."""
        await self._guard(lambda: self.inner.put(key, entry, now, ttl_s), None)

    async def stats(self, now: float) -> CacheStats:
        """The backend's stats, or empty ones when it is off."""
        return await self._guard(lambda: self.inner.stats(now), EMPTY_STATS)

    async def clear(self, older_than_s: float | None, now: float) -> int:
        """Entries deleted; 0 when the cache is off."""
        return await self._guard(lambda: self.inner.clear(older_than_s, now), 0)

    async def close(self) -> None:
        """Close the backend even after a failure, so its sockets are released."""
        try:
            with anyio.fail_after(self.timeout_s):
                await self.inner.close()
        except Exception as exc:  # closing is best effort; the run's results are already safe
            self._fail(exc)

    async def _guard(self, call: Callable[[], Awaitable[T]], fallback: T) -> T:
        if not self.available:
            return fallback
        try:
            with anyio.fail_after(self.timeout_s):
                return await call()
        except Exception as exc:  # any failure of the cache must not fail the run
            self._fail(exc)
            return fallback

    def _fail(self, exc: Exception) -> None:
        if not self.available:
            return
        self.available = False
        if isinstance(exc, TimeoutError) and not str(exc):
            reason = f"no answer within {self.timeout_s:g} s"
        else:
            reason = redact(f"{type(exc).__name__}: {exc}", self._secrets)
        logger.warning(
            "response cache in %s failed (%s); the run continues without the cache",
            self.label,
            reason,
        )
