"""The response cache in Redis: one hash per entry, so its hit counter expires with it."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

from runner.cache.protocol import CachedResponse, CacheStats, check_body, expires_at, is_expired

logger = logging.getLogger("runner.cache")

DEFAULT_PREFIX = "runner:cache:"
_SCAN_BATCH = 500
# Count a hit only on a key that still exists: HINCRBY on a key that expired a moment ago
# would recreate it as a bare counter without a TTL.
_COUNT_HIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    return redis.call('HINCRBY', KEYS[1], 'hits', 1)
end
return 0
"""


def safe_url(url: str) -> str:
    """`url` without its password and query (where a password may also be given), for logs."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    host = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{user}{host}{parts.path}"


def url_secrets(url: str) -> tuple[str, ...]:
    """Every form of the password in `url`, for runner.redact.redact."""
    parts = urlsplit(url)
    found = [parts.password or "", *parse_qs(parts.query).get("password", [])]
    return tuple({s for p in found if p for s in (p, unquote(p))})


@dataclass(frozen=True, slots=True)
class _Meta:
    created_at: float
    expires_at: float | None
    hits: int
    size: int


def _decode(fields: Mapping[bytes, bytes]) -> tuple[CachedResponse, float | None] | None:
    try:
        entry = CachedResponse(
            body=check_body(fields[b"body"]),
            model=fields[b"model"].decode(),
            prompt_tokens=int(fields[b"prompt_tokens"]),
            completion_tokens=int(fields[b"completion_tokens"]),
            created_at=float(fields[b"created_at"]),
        )
        expires = float(fields[b"expires_at"]) if fields[b"expires_at"] else None
    except (KeyError, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    return entry, expires


def _meta(fields: object, size: object) -> _Meta | None:
    # Pipelines answer a wrong-typed key with an exception object in place of a value.
    if not isinstance(fields, list) or not isinstance(size, int):
        return None
    created, expires, hits = fields
    try:
        return _Meta(float(created), float(expires) if expires else None, int(hits or 0), size)
    except (TypeError, ValueError):
        return None


def _is_wrong_type(exc: ResponseError) -> bool:
    # Inside a pipeline the server's WRONGTYPE reply is wrapped in a longer message.
    return "WRONGTYPE" in str(exc)


class RedisCache:
    """`ResponseCache` on a Redis server; Redis expires entries itself, `now` is checked too."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, timeout_s: float = 5.0) -> None:
        self.label = f"Redis at {safe_url(url)}"
        self._prefix = prefix
        self._match = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
        # No retries: a cache that does not answer at once is worth less than the time lost.
        self._client = Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._count_hit = self._client.register_script(_COUNT_HIT)

    async def get(self, key: str, now: float) -> CachedResponse | None:
        """The live entry under `key`, counting a hit; a corrupt entry is deleted."""
        name = self._prefix + key
        fields = await self._fields(name)
        if fields == {}:
            return None
        decoded = None if fields is None else _decode(fields)
        if decoded is None:
            logger.info("dropping a corrupt cache entry %s in %s", key, self.label)
            await self._client.delete(name)
            return None
        entry, expires = decoded
        if is_expired(expires, now):
            return None
        await self._count_hit(keys=[name])
        return entry

    async def _fields(self, name: str) -> dict[bytes, bytes] | None:
        """The hash under `name` ({} if absent); None when something else is stored there."""
        try:
            # The client is built without decode_responses, so every reply is bytes.
            return cast(dict[bytes, bytes], await self._client.hgetall(name))
        except ResponseError as exc:
            if _is_wrong_type(exc):
                return None
            raise

    async def put(self, key: str, entry: CachedResponse, now: float, ttl_s: float) -> None:
        """Write the entry under `key` (its hit count stays); Redis drops it after `ttl_s`."""
        name = self._prefix + key
        expires = expires_at(now, ttl_s)
        mapping: dict[FieldT, EncodableT] = {
            "body": entry.body,
            "model": entry.model,
            "prompt_tokens": entry.prompt_tokens,
            "completion_tokens": entry.completion_tokens,
            "created_at": entry.created_at,
            "expires_at": "" if expires is None else expires,
        }
        try:
            await self._write(name, mapping, ttl_s)
        except ResponseError as exc:
            if not _is_wrong_type(exc):
                raise
            await self._client.delete(name)
            await self._write(name, mapping, ttl_s)

    async def _write(self, name: str, mapping: dict[FieldT, EncodableT], ttl_s: float) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(name, mapping=mapping)
            if math.isinf(ttl_s):
                pipe.persist(name)
            else:
                pipe.pexpire(name, max(1, math.ceil(ttl_s * 1000)))
            await pipe.execute()

    async def stats(self, now: float) -> CacheStats:
        """Counts over every key under the prefix (a SCAN: slow for millions of keys)."""
        tally = _Tally()
        async for names in self._names():
            for meta in await self._metas(names):
                tally.add(meta, now)
        return tally.stats()

    async def clear(self, older_than_s: float | None, now: float) -> int:
        """Delete expired and corrupt entries and those created before `now - older_than_s`."""
        deleted = 0
        async for names in self._names():
            doomed = names
            if older_than_s is not None:
                metas = await self._metas(names)
                doomed = [
                    n
                    for n, m in zip(names, metas, strict=True)
                    if _doomed(m, now - older_than_s, now)
                ]
            if doomed:
                deleted += int(await self._client.delete(*doomed))
        return deleted

    async def close(self) -> None:
        """Close the client and its connection pool."""
        await self._client.aclose()

    async def _names(self) -> AsyncIterator[list[bytes]]:
        batch: list[bytes] = []
        async for name in self._client.scan_iter(match=self._match, count=_SCAN_BATCH):
            batch.append(name)
            if len(batch) == _SCAN_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    async def _metas(self, names: list[bytes]) -> list[_Meta | None]:
        async with self._client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(name, ["created_at", "expires_at", "hits"])
                pipe.hstrlen(name, "body")
            replies = await pipe.execute(raise_on_error=False)
        return [_meta(f, s) for f, s in zip(replies[::2], replies[1::2], strict=True)]


def _doomed(meta: _Meta | None, cutoff: float, now: float) -> bool:
    return meta is None or meta.created_at < cutoff or is_expired(meta.expires_at, now)


class _Tally:
    """Running totals for `stats`, so a large cache is summed without holding it in memory."""

    def __init__(self) -> None:
        self.total = self.expired = self.size = self.hits = 0
        self.oldest: float | None = None
        self.newest: float | None = None

    def add(self, meta: _Meta | None, now: float) -> None:
        if meta is None:
            return  # corrupt: not an entry; `clear` removes it
        self.total += 1
        self.expired += is_expired(meta.expires_at, now)
        self.size += meta.size
        self.hits += meta.hits
        at = meta.created_at
        self.oldest = at if self.oldest is None else min(at, self.oldest)
        self.newest = at if self.newest is None else max(at, self.newest)

    def stats(self) -> CacheStats:
        return CacheStats(
            entries=self.total - self.expired,
            expired=self.expired,
            bytes=self.size,
            hits_recorded=self.hits,
            oldest_created_at=self.oldest,
            newest_created_at=self.newest,
        )
