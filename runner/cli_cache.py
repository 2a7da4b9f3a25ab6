"""`runner cache stats` and `runner cache clear`."""

from __future__ import annotations

import time

import click

from runner.cache.policy import parse_ttl
from runner.cache.store import GuardedCache, open_cache
from runner.cli_common import call, db_option
from runner.config import Environment
from runner.errors import UsageError
from runner.store.connect import open_existing_store
from runner.store.sql import SqlStore

URL_OPTION = click.option(
    "--cache-url", default=None, help="redis://host:port/db (default: the cache in the run DB)."
)


@click.group()
def cache() -> None:
    """The response cache: what it holds, and clearing it."""


@cache.command("stats")
@URL_OPTION
@db_option
def cache_stats(cache_url: str | None, db: str | None) -> None:
    """Entries, size, hits recorded and ages."""
    env = Environment.from_process()

    async def go() -> str:
        async with open_existing_store(db or env.db) as store:
            backend = _open(cache_url, store)
            try:
                stats = await backend.stats(time.time())
            finally:
                await backend.close()
        _require(backend)
        oldest = _when(stats.oldest_created_at)
        newest = _when(stats.newest_created_at)
        return (
            f"cache ({backend.label}): {stats.entries:,} entries served, {stats.expired:,} "
            f"expired awaiting clear, {stats.bytes:,} bytes, {stats.hits_recorded:,} hits; "
            f"oldest {oldest}, newest {newest}"
        )

    click.echo(call(go))


@cache.command("clear")
@URL_OPTION
@click.option("--older-than", default=None, help="Only entries older than this: 12h, 7d, ...")
@db_option
def cache_clear(cache_url: str | None, older_than: str | None, db: str | None) -> None:
    """Delete cached answers (all, or those older than --older-than) and expired ones."""
    env = Environment.from_process()
    try:
        age = parse_ttl(older_than) if older_than else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None

    async def go() -> int:
        async with open_existing_store(db or env.db) as store:
            backend = _open(cache_url, store)
            try:
                deleted = await backend.clear(age, time.time())
            finally:
                await backend.close()
        _require(backend)
        return deleted

    click.echo(f"{call(go):,} cached answer(s) deleted")


def _open(url: str | None, store: SqlStore) -> GuardedCache:
    try:
        # Maintenance may scan a large cache: allow it more time than a run's look-up.
        return open_cache(url, store.engine, timeout_s=60.0)
    except ValueError as exc:
        raise UsageError(f"--cache-url: {exc}") from None


def _require(backend: GuardedCache) -> None:
    if not backend.available:
        raise UsageError(f"the cache ({backend.label}) could not be reached; see the warning above")


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(at))
