"""Response cache backends on real SQLite, PostgreSQL and Redis, and the guard around them."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from alembic import command
from redis.asyncio import Redis
from sqlalchemy import insert, select, text

from runner.cache.guard import GuardedCache
from runner.cache.protocol import CachedResponse, CacheStats
from runner.cache.rediscache import RedisCache, safe_url, url_secrets
from runner.cache.sqlcache import SqlCache
from runner.cache.store import ResponseCache, open_cache
from runner.store.connect import open_store
from runner.store.migrate import alembic_config
from runner.store.schema import jobs, response_cache, runs
from tests.support import fresh_postgres_database

pytestmark = pytest.mark.anyio

REDIS_URL = "redis://127.0.0.1:6379/15"
NOW = 1_700_000_000.0
DAY = 86_400.0
# Not re-serialised on the way through: odd spacing, escapes and raw UTF-8 come back as stored.
BODY = (
    b'{"id": "chatcmpl-1",  "choices":[{"message":{"role":"assistant",'
    b'"content":"h\\u00e9llo \xc3\xa9\\n"}}],"usage":{"prompt_tokens":9,"completion_tokens":2}}'
)


def entry(
    body: bytes = BODY, created_at: float = NOW, model: str = "selam-turbo"
) -> CachedResponse:
    return CachedResponse(
        body=body, model=model, prompt_tokens=9, completion_tokens=2, created_at=created_at
    )


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    # Module scope, so one PostgreSQL database serves every test here.
    return "asyncio"


@pytest.fixture(scope="module")
async def postgres_url() -> AsyncIterator[str]:
    async with fresh_postgres_database("runner_cache") as url:
        yield url


@pytest.fixture
def redis_prefix() -> str:
    return f"test:runner:cache:{uuid.uuid4().hex}:"


@pytest.fixture
async def raw_redis(redis_prefix: str) -> AsyncIterator[Redis]:
    """A plain client on db 15; removes the test's keys afterwards."""
    client = Redis.from_url(REDIS_URL)
    try:
        yield client
        names = [name async for name in client.scan_iter(match=redis_prefix + "*")]
        if names:
            await client.delete(*names)
    finally:
        await client.aclose()


@pytest.fixture
async def sqlite_cache(tmp_path: Path) -> AsyncIterator[SqlCache]:
    async with open_store(str(tmp_path / "runs.db")) as store:
        yield SqlCache(store.engine)


@pytest.fixture
async def redis_cache(raw_redis: Redis, redis_prefix: str) -> AsyncIterator[RedisCache]:
    cache = RedisCache(REDIS_URL, prefix=redis_prefix)
    try:
        yield cache
    finally:
        await cache.close()


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
async def cache(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str, redis_prefix: str
) -> AsyncIterator[ResponseCache]:
    """Each backend in turn, empty."""
    if request.param == "redis":
        redis = RedisCache(REDIS_URL, prefix=redis_prefix)
        try:
            yield redis
        finally:
            await redis.clear(None, NOW)
            await redis.close()
        return
    db = postgres_url if request.param == "postgresql" else str(tmp_path / "runs.db")
    async with open_store(db) as store:
        sql = SqlCache(store.engine)
        await sql.clear(None, NOW)  # the PostgreSQL database is shared by the module's tests
        yield sql


# --- behaviour every backend shares -------------------------------------------------------


async def test_get_of_an_unknown_key_is_a_miss(cache: ResponseCache) -> None:
    assert await cache.get("nope", NOW) is None


async def test_put_then_get_returns_the_exact_bytes_and_accounting(cache: ResponseCache) -> None:
    await cache.put("k", entry(), NOW, DAY)
    assert await cache.get("k", NOW + 1) == entry()


async def test_an_entry_is_served_until_its_ttl_and_never_after(cache: ResponseCache) -> None:
    await cache.put("k", entry(), NOW, 60)
    assert await cache.get("k", NOW + 59.9) is not None
    assert await cache.get("k", NOW + 60) is None
    assert (await cache.stats(NOW + 60)).expired == 1


async def test_an_infinite_ttl_never_expires(cache: ResponseCache) -> None:
    await cache.put("k", entry(), NOW, math.inf)
    assert await cache.get("k", NOW + 100 * 365 * DAY) == entry()


async def test_put_replaces_the_entry_and_keeps_its_hit_count(cache: ResponseCache) -> None:
    await cache.put("k", entry(), NOW, DAY)
    await cache.get("k", NOW)
    newer = entry(body=b'{"id":"chatcmpl-2"}', created_at=NOW + 5, model="selam-pro")
    await cache.put("k", newer, NOW + 5, DAY)
    assert await cache.get("k", NOW + 6) == newer
    stats = await cache.stats(NOW + 6)
    assert (stats.entries, stats.hits_recorded) == (1, 2)


async def test_stats_count_entries_expired_bytes_hits_and_ages(cache: ResponseCache) -> None:
    await cache.put("old", entry(created_at=NOW - 100), NOW - 100, 50)  # expired at NOW - 50
    await cache.put("a", entry(created_at=NOW - 10), NOW - 10, DAY)
    await cache.put("b", entry(body=b"{}", created_at=NOW), NOW, math.inf)
    for _ in range(3):
        await cache.get("a", NOW)
    await cache.get("old", NOW)  # expired: not a hit
    assert await cache.stats(NOW) == CacheStats(
        entries=2,
        expired=1,
        bytes=2 * len(BODY) + 2,
        hits_recorded=3,
        oldest_created_at=NOW - 100,
        newest_created_at=NOW,
    )


async def test_stats_of_an_empty_cache(cache: ResponseCache) -> None:
    assert await cache.stats(NOW) == CacheStats(0, 0, 0, 0, None, None)


async def test_clear_older_than_removes_old_and_expired_entries(cache: ResponseCache) -> None:
    await cache.put("ancient", entry(created_at=NOW - 100), NOW - 100, DAY)
    await cache.put("expired", entry(created_at=NOW - 10), NOW - 10, 5)
    await cache.put("recent", entry(created_at=NOW - 10), NOW - 10, DAY)
    await cache.put("fresh", entry(created_at=NOW), NOW, math.inf)
    assert await cache.clear(50, NOW) == 2
    assert await cache.get("ancient", NOW) is None
    assert await cache.get("recent", NOW) is not None
    assert (await cache.stats(NOW)).entries == 2
    assert await cache.clear(None, NOW) == 2
    assert (await cache.stats(NOW)).entries == 0


# --- backend specifics --------------------------------------------------------------------


async def test_sql_never_expiring_entries_store_a_null_expiry(sqlite_cache: SqlCache) -> None:
    await sqlite_cache.put("k", entry(), NOW, math.inf)
    async with sqlite_cache._engine.connect() as conn:
        expiry = (await conn.execute(select(response_cache.c.expires_at))).scalar_one()
    assert expiry is None


@pytest.mark.parametrize(
    "bad_body",
    [pytest.param(b"not json", id="not-json"), pytest.param(b"\xff\xfe", id="not-utf8")],
)
async def test_sql_corrupt_entry_is_a_miss_and_is_deleted(
    sqlite_cache: SqlCache, bad_body: bytes
) -> None:
    row = dict(key="k", body=bad_body, model="m", prompt_tokens=1, completion_tokens=1)
    async with sqlite_cache._engine.begin() as conn:
        await conn.execute(insert(response_cache).values(**row, created_at=NOW, hits=0))
    assert await sqlite_cache.get("k", NOW) is None
    assert (await sqlite_cache.stats(NOW)).entries == 0


async def test_sql_text_written_into_the_body_column_is_a_miss(sqlite_cache: SqlCache) -> None:
    """SQLite stores whatever type it is given; a TEXT body from another writer is corrupt."""
    async with sqlite_cache._engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO response_cache VALUES ('k', 'garbage', 'm', 1, 1, :now, NULL, 0)"),
            {"now": NOW},
        )
    assert await sqlite_cache.get("k", NOW) is None


async def test_redis_expires_entries_itself(redis_cache: RedisCache, raw_redis: Redis) -> None:
    """The only test that sleeps: Redis's own TTL, not the `now` argument, removes the key."""
    await redis_cache.put("short", entry(), NOW, 0.2)
    await redis_cache.put("forever", entry(), NOW, math.inf)
    assert await redis_cache.get("short", NOW) is not None
    await anyio.sleep(0.3)
    assert await redis_cache.get("short", NOW) is None
    assert await raw_redis.exists(redis_cache._prefix + "short") == 0
    assert await raw_redis.ttl(redis_cache._prefix + "forever") == -1  # no expiry set


async def test_redis_put_over_a_timed_entry_with_infinite_ttl_removes_the_expiry(
    redis_cache: RedisCache, raw_redis: Redis
) -> None:
    await redis_cache.put("k", entry(), NOW, 60)
    await redis_cache.put("k", entry(), NOW, math.inf)
    assert await raw_redis.ttl(redis_cache._prefix + "k") == -1


async def write_string(client: Redis, name: str) -> None:
    await client.set(name, b"\x00not a hash")


async def write_bad_json(client: Redis, name: str) -> None:
    await client.hset(
        name,
        mapping={
            "body": b"{truncated",
            "model": "m",
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "created_at": NOW,
            "expires_at": "",
        },
    )


async def write_missing_fields(client: Redis, name: str) -> None:
    await client.hset(name, mapping={"body": b"{}", "hits": 3})


async def write_bad_number(client: Redis, name: str) -> None:
    await client.hset(
        name,
        mapping={
            "body": b"{}",
            "model": "m",
            "prompt_tokens": "many",
            "completion_tokens": 1,
            "created_at": NOW,
            "expires_at": "",
        },
    )


@pytest.mark.parametrize(
    "corrupt", [write_string, write_bad_json, write_missing_fields, write_bad_number]
)
async def test_redis_corrupt_entry_is_a_miss_and_is_deleted(
    redis_cache: RedisCache, raw_redis: Redis, corrupt: Any
) -> None:
    name = redis_cache._prefix + "k"
    await corrupt(raw_redis, name)
    assert await redis_cache.get("k", NOW) is None
    assert await raw_redis.exists(name) == 0
    await redis_cache.put("k", entry(), NOW, DAY)  # and the key is usable again
    assert await redis_cache.get("k", NOW) == entry()


async def test_redis_clear_removes_corrupt_entries(
    redis_cache: RedisCache, raw_redis: Redis
) -> None:
    await write_string(raw_redis, redis_cache._prefix + "bad")
    await redis_cache.put("good", entry(), NOW, DAY)
    assert await redis_cache.clear(DAY, NOW) == 1
    assert await redis_cache.get("good", NOW) is not None


async def test_redis_put_replaces_a_key_of_another_type(
    redis_cache: RedisCache, raw_redis: Redis
) -> None:
    await write_string(raw_redis, redis_cache._prefix + "k")
    await redis_cache.put("k", entry(), NOW, DAY)
    assert await redis_cache.get("k", NOW) == entry()


# --- the guard ----------------------------------------------------------------------------


@pytest.fixture
def cache_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="runner.cache"):
        yield caplog


def warnings_in(log: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in log.records if r.levelno >= logging.WARNING]


async def test_unreachable_redis_is_a_miss_with_one_warning_and_puts_do_nothing(
    tmp_path: Path, cache_log: pytest.LogCaptureFixture
) -> None:
    async with open_store(str(tmp_path / "runs.db")) as store:
        guarded = open_cache("redis://:hunter2-pass@127.0.0.1:1/0", store.engine)
        try:
            for _ in range(3):
                assert await guarded.get("k", NOW) is None
                await guarded.put("k", entry(), NOW, DAY)
            assert await guarded.stats(NOW) == CacheStats(0, 0, 0, 0, None, None)
            assert await guarded.clear(None, NOW) == 0
        finally:
            await guarded.close()
    assert not guarded.available
    [message] = warnings_in(cache_log)
    assert "redis://127.0.0.1:1/0" in message
    assert "continues without the cache" in message
    assert "hunter2" not in message


class Recording:
    """A backend that records calls and fails or stalls on request."""

    label = "the recording cache"

    def __init__(self, fail: BaseException | None = None, stall_s: float = 0.0) -> None:
        self.calls: list[str] = []
        self.closed = False
        self.fail = fail
        self.stall_s = stall_s

    async def _call(self, name: str) -> None:
        self.calls.append(name)
        await anyio.sleep(self.stall_s)
        if self.fail is not None:
            raise self.fail

    async def get(self, key: str, now: float) -> CachedResponse | None:
        await self._call("get")
        return entry()

    async def put(self, key: str, entry: CachedResponse, now: float, ttl_s: float) -> None:
        await self._call("put")

    async def stats(self, now: float) -> CacheStats:
        await self._call("stats")
        return CacheStats(1, 0, 1, 0, NOW, NOW)

    async def clear(self, older_than_s: float | None, now: float) -> int:
        await self._call("clear")
        return 1

    async def close(self) -> None:
        self.closed = True


async def test_guard_passes_calls_through_while_the_backend_works() -> None:
    inner = Recording()
    guarded = GuardedCache(inner)
    assert await guarded.get("k", NOW) == entry()
    await guarded.put("k", entry(), NOW, DAY)
    assert (await guarded.stats(NOW)).entries == 1
    assert await guarded.clear(None, NOW) == 1
    await guarded.close()
    assert inner.calls == ["get", "put", "stats", "clear"]
    assert inner.closed
    assert guarded.available


async def test_guard_turns_the_cache_off_after_one_error_and_redacts_it(
    cache_log: pytest.LogCaptureFixture,
) -> None:
    inner = Recording(fail=ConnectionError("AUTH s3cret-pw refused; key sk-selam-abcdef123456"))
    guarded = GuardedCache(inner, secrets=["s3cret-pw"])
    assert await guarded.get("k", NOW) is None
    await guarded.put("k", entry(), NOW, DAY)
    assert await guarded.get("k", NOW) is None
    await guarded.close()
    assert inner.calls == ["get"]  # nothing reaches the backend once it has failed
    assert inner.closed  # but it is still closed, so its sockets are released
    [warning] = warnings_in(cache_log)
    assert "ConnectionError" in warning
    assert "the recording cache" in warning
    assert "s3cret-pw" not in warning
    assert "sk-selam-abcdef123456" not in warning


async def test_guard_gives_up_on_a_backend_that_does_not_answer_in_time(
    cache_log: pytest.LogCaptureFixture,
) -> None:
    guarded = GuardedCache(Recording(stall_s=5.0), timeout_s=0.05)
    with anyio.fail_after(2):
        assert await guarded.get("k", NOW) is None
        assert await guarded.get("k", NOW) is None
    [warning] = warnings_in(cache_log)
    assert "no answer within 0.05 s" in warning


async def test_guard_lets_cancellation_through() -> None:
    guarded = GuardedCache(Recording(stall_s=5.0), timeout_s=10)
    with anyio.move_on_after(0.01) as scope:
        await guarded.get("k", NOW)
    assert scope.cancelled_caught
    assert guarded.available


async def test_corrupt_entry_through_the_guard_is_a_miss_and_keeps_the_cache_on(
    redis_prefix: str, raw_redis: Redis, cache_log: pytest.LogCaptureFixture
) -> None:
    guarded = GuardedCache(RedisCache(REDIS_URL, prefix=redis_prefix))
    try:
        await write_bad_json(raw_redis, redis_prefix + "bad")
        assert await guarded.get("bad", NOW) is None
        await guarded.put("good", entry(), NOW, DAY)
        assert await guarded.get("good", NOW) == entry()
    finally:
        await guarded.close()
    assert guarded.available
    assert warnings_in(cache_log) == []


# --- choosing a backend -------------------------------------------------------------------


async def test_open_cache_picks_the_backend_from_the_url(tmp_path: Path) -> None:
    async with open_store(str(tmp_path / "runs.db")) as store:
        sql = open_cache(None, store.engine)
        tls = open_cache("rediss://cache.example:6380/2", store.engine)
        try:
            assert isinstance(sql.inner, SqlCache)
            assert isinstance(tls.inner, RedisCache)
            assert tls.label == "Redis at rediss://cache.example:6380/2"
        finally:
            await sql.close()
            await tls.close()


async def test_open_cache_rejects_other_urls_without_showing_the_password(
    tmp_path: Path,
) -> None:
    async with open_store(str(tmp_path / "runs.db")) as store:
        with pytest.raises(ValueError, match=r"redis://.*rediss://") as caught:
            open_cache("memcached://bob:pw-xyz@host:11211", store.engine)
    assert "pw-xyz" not in str(caught.value)
    assert "memcached://bob@host:11211" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown", "secrets"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0", set()),
        ("redis://:p%40ss@h/1", "redis://h/1", {"p%40ss", "p@ss"}),
        ("rediss://user:pw@h:6380", "rediss://user@h:6380", {"pw"}),
        ("redis://h/0?password=qpw&ssl=1", "redis://h/0", {"qpw"}),
    ],
)
def test_urls_are_logged_without_passwords(url: str, shown: str, secrets: set[str]) -> None:
    assert safe_url(url) == shown
    assert set(url_secrets(url)) == secrets


# --- the migration ------------------------------------------------------------------------


def _upgrade_to(revision: str) -> Any:
    return lambda conn: command.upgrade(alembic_config(conn), revision)


async def test_migration_0002_marks_existing_jobs_as_not_cached(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    async with open_store(path, migrate=False) as store, store.engine.begin() as conn:
        await conn.run_sync(_upgrade_to("0001"))
        run = dict(out_path="o", input_path="i", input_digest="d", state="ready")
        await conn.execute(
            text(
                "INSERT INTO runs (id, out_path, input_path, input_digest, state, total_jobs, "
                "created_at, updated_at, active_s, next_seq, export_seq, export_offset) "
                "VALUES (1, :out_path, :input_path, :input_digest, :state, 1, 0, 0, 0, 0, 0, 0)"
            ),
            run,
        )
        await conn.execute(
            text(
                "INSERT INTO jobs (run_id, line, custom_id, body, est_tokens, state, attempts, "
                "next_attempt_at, prompt_tokens, completion_tokens) "
                "VALUES (1, 1, 'a', x'7b7d', 0, 'done', 1, 0, 0, 0)"
            )
        )
    async with open_store(path) as store, store.engine.connect() as conn:
        assert (await conn.execute(select(jobs.c.cached))).scalars().all() == [False]
        assert (await conn.execute(select(runs.c.id))).scalars().all() == [1]
