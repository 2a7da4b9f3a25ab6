"""The response cache backends behind one Protocol, and `open_cache` to pick one.

`ResponseCache` is the seam; `SqlCache` keeps entries in the run database, `RedisCache` in a
Redis server shared by many machines; `GuardedCache` wraps either so that a broken or slow
cache turns itself off instead of failing the run.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from runner.cache.guard import GuardedCache
from runner.cache.protocol import CachedResponse, CacheStats, ResponseCache
from runner.cache.sqlcache import SqlCache

__all__ = [
    "CacheStats",
    "CachedResponse",
    "GuardedCache",
    "ResponseCache",
    "SqlCache",
    "open_cache",
]

_REDIS_SCHEMES = ("redis", "rediss")


def open_cache(url: str | None, engine: AsyncEngine, *, timeout_s: float = 1.0) -> GuardedCache:
    """The cache at `url` (None: the run database behind `engine`), guarded."""
    if url is None:
        return GuardedCache(SqlCache(engine), timeout_s)
    # Imported only when asked for: the Redis client is a fifth of the process's memory.
    from runner.cache.rediscache import RedisCache, safe_url, url_secrets

    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in _REDIS_SCHEMES:
        raise ValueError(
            f"cache URL {safe_url(url)!r} is not supported: leave it unset to keep the cache in "
            "the run database, or give redis://[[user]:password@]host[:port][/db] "
            "(rediss:// for TLS)"
        )
    return GuardedCache(RedisCache(url), timeout_s, secrets=url_secrets(url))
