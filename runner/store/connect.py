"""Opening the database: a file path or URL to a migrated async engine, SQLite tuned for us."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from runner.errors import UsageError
from runner.store.migrate import MigrationError, upgrade
from runner.store.sql import SqlStore

SQLITE_BUSY_TIMEOUT_MS = 30_000


def database_url(db: str) -> str:
    """A SQLAlchemy async URL from a file path or a URL."""
    if "://" not in db:
        return f"sqlite+aiosqlite:///{Path(db).expanduser().resolve()}"
    scheme, rest = db.split("://", 1)
    drivers = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
    drivers["postgres"] = drivers["postgresql"]
    return f"{drivers.get(scheme, scheme)}://{rest}"


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take over transaction control from the driver so BEGIN IMMEDIATE is ours to send.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # WAL with NORMAL survives a killed process; only power loss can drop the last commits.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # A bigger page cache (8 MiB, 4x the default) keeps the hot index pages in memory
        # during bulk ingest and claims without letting memory grow with the queue.
        cursor.execute("PRAGMA cache_size=-8192")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the lock up front: a deferred transaction that upgrades to a write can
        # fail with "database is locked" without waiting for the busy timeout.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


@asynccontextmanager
async def open_store(db: str, migrate: bool = True) -> AsyncIterator[SqlStore]:
    """Open (and by default migrate) the database behind `db`; dispose of it on exit."""
    engine = _create_engine(db)
    try:
        if migrate:
            try:
                await upgrade(engine)
            except (OSError, SQLAlchemyError, MigrationError) as exc:
                raise UsageError(f"cannot use the database {db!r}: {_reason(exc)}") from None
        yield SqlStore(engine)
    finally:
        await engine.dispose()


def _create_engine(db: str) -> AsyncEngine:
    url = database_url(db)
    try:
        if url.startswith("sqlite"):
            path = url.split(":///", 1)[1] if ":///" in url else ""
            if path in ("", ":memory:"):
                raise UsageError(
                    "--db must name a file or a server: a run must outlive the process"
                )
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=600)
            _configure_sqlite(engine)
            return engine
        return create_async_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        extra = " (pip install 'runner[postgres]')" if "asyncpg" in str(exc) else ""
        raise UsageError(f"--db {db!r}: the database driver is missing{extra}") from None
    except (ArgumentError, NoSuchModuleError, OSError) as exc:
        raise UsageError(
            f"--db {db!r} is not usable ({_reason(exc)}); give a file path, "
            "sqlite:///path or postgresql://user@host/db"
        ) from None


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0][:300] if text else type(exc).__name__


def database_exists(db: str) -> bool:
    """False only for a SQLite file that is not there (other databases are assumed to exist)."""
    url = database_url(db)
    if not url.startswith("sqlite") or url.endswith(":memory:"):
        return True
    return Path(url.split(":///", 1)[1]).exists()


@asynccontextmanager
async def open_existing_store(db: str) -> AsyncIterator[SqlStore]:
    """Open a database for reading runs without creating it (for status and listings)."""
    if not database_exists(db):
        raise UsageError(f"no runs yet: there is no database at {db} (set by --db or RUNNER_DB)")
    async with open_store(db) as store:
        yield store
