"""The response cache as a table in the run database (SQLite or PostgreSQL)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Insert, case, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from runner.cache.protocol import CachedResponse, CacheStats, check_body, expires_at
from runner.store.schema import response_cache

logger = logging.getLogger("runner.cache")

_t = response_cache
_ENTRY_COLUMNS = (
    _t.c.body,
    _t.c.model,
    _t.c.prompt_tokens,
    _t.c.completion_tokens,
    _t.c.created_at,
)


def _live(now: float) -> Any:
    return or_(_t.c.expires_at.is_(None), _t.c.expires_at > now)


def _expired(now: float) -> Any:
    # NULL (never expires) compares as unknown, so it is never expired.
    return _t.c.expires_at <= now


def upsert(dialect_name: str, values: dict[str, Any]) -> Insert:
    """INSERT of one entry that replaces an existing one with the same key (its hits stay)."""
    kept = [name for name in values if name not in ("key", "hits")]
    if dialect_name == "postgresql":
        pg = postgresql.insert(_t).values(**values)
        return pg.on_conflict_do_update(
            index_elements=["key"], set_={n: pg.excluded[n] for n in kept}
        )
    lite = sqlite.insert(_t).values(**values)
    return lite.on_conflict_do_update(
        index_elements=["key"], set_={n: lite.excluded[n] for n in kept}
    )


def _entry(row: Row[Any]) -> CachedResponse | None:
    try:
        return CachedResponse(
            body=check_body(bytes(row.body)),
            model=str(row.model),
            prompt_tokens=int(row.prompt_tokens),
            completion_tokens=int(row.completion_tokens),
            created_at=float(row.created_at),
        )
    except (TypeError, ValueError):
        return None


class SqlCache:
    """`ResponseCache` on the run database's engine (which the store owns and disposes of)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.label = f"the response_cache table ({engine.dialect.name})"

    async def get(self, key: str, now: float) -> CachedResponse | None:
        """The live entry under `key`, counting the hit in the same statement."""
        hit = (
            update(_t)
            .where(_t.c.key == key, _live(now))
            .values(hits=_t.c.hits + 1)
            .returning(*_ENTRY_COLUMNS)
        )
        async with self._engine.begin() as conn:
            row = (await conn.execute(hit)).first()
            if row is None:
                return None
            entry = _entry(row)
            if entry is None:
                logger.info("dropping a corrupt cache entry %s in %s", key, self.label)
                await conn.execute(delete(_t).where(_t.c.key == key))
        return entry

    async def put(self, key: str, entry: CachedResponse, now: float, ttl_s: float) -> None:
        """Insert or replace the entry under `key`."""
        values = dict(
            key=key,
            body=entry.body,
            model=entry.model,
            prompt_tokens=entry.prompt_tokens,
            completion_tokens=entry.completion_tokens,
            created_at=entry.created_at,
            expires_at=expires_at(now, ttl_s),
            hits=0,
        )
        async with self._engine.begin() as conn:
            await conn.execute(upsert(self._engine.dialect.name, values))

    async def stats(self, now: float) -> CacheStats:
        """Counts over the whole table."""
        query = select(
            func.count(),
            func.coalesce(func.sum(case((_expired(now), 1), else_=0)), 0),
            func.coalesce(func.sum(func.length(_t.c.body)), 0),
            func.coalesce(func.sum(_t.c.hits), 0),
            func.min(_t.c.created_at),
            func.max(_t.c.created_at),
        )
        async with self._engine.connect() as conn:
            total, expired, size, hits, oldest, newest = (await conn.execute(query)).one()
        return CacheStats(
            entries=int(total) - int(expired),
            expired=int(expired),
            bytes=int(size),
            hits_recorded=int(hits),
            oldest_created_at=None if oldest is None else float(oldest),
            newest_created_at=None if newest is None else float(newest),
        )

    async def clear(self, older_than_s: float | None, now: float) -> int:
        """Delete expired entries and those created before `now - older_than_s` (None: all)."""
        stmt = delete(_t)
        if older_than_s is not None:
            stmt = stmt.where(or_(_t.c.created_at < now - older_than_s, _expired(now)))
        async with self._engine.begin() as conn:
            return int((await conn.execute(stmt)).rowcount)

    async def close(self) -> None:
        """Nothing to release: the engine belongs to the store."""
