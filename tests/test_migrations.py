"""The Alembic migrations build exactly the schema of runner.store.schema.metadata."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from runner.store.connect import open_store
from runner.store.migrate import HEAD_REVISION, alembic_config, upgrade
from runner.store.schema import metadata
from runner.store.sql import SqlStore
from tests.support import fresh_postgres_database

POSTGRES_SERVER = "postgres@127.0.0.1:5432"
POSTGRES_URL = f"postgresql+asyncpg://{POSTGRES_SERVER}/test"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, metadata))


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def schema_diff(store: SqlStore) -> list[Any]:
    async with store.engine.connect() as conn:
        return await conn.run_sync(_diff)


async def revision(store: SqlStore) -> str | None:
    async with store.engine.connect() as conn:
        return await conn.run_sync(_revision)


def head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_the_head_revision_constant_is_alembics_head() -> None:
    # Start-up compares databases against the constant; a new migration must move it too.
    assert head() == HEAD_REVISION


@pytest.mark.anyio
async def test_sqlite_a_database_one_revision_behind_is_upgraded(tmp_path: Path) -> None:
    db = str(tmp_path / "old.db")
    async with open_store(db, migrate=False) as store, store.engine.begin() as conn:
        await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0003"))
    async with open_store(db) as store:
        assert await revision(store) == HEAD_REVISION


async def migrate_from_scratch(url: str) -> None:
    """Every migration in turn on an empty database, as an old database would have had them."""
    async with open_store(url, migrate=False) as store, store.engine.begin() as conn:
        await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "head"))


@pytest.mark.anyio
async def test_sqlite_every_migration_in_turn_builds_the_metadata(tmp_path: Path) -> None:
    url = str(tmp_path / "stepwise.db")
    await migrate_from_scratch(url)
    async with open_store(url, migrate=False) as store:
        assert await schema_diff(store) == []
        assert await revision(store) == head()


@pytest.mark.anyio
async def test_sqlite_a_fresh_database_gets_the_metadata_stamped_at_head(tmp_path: Path) -> None:
    async with open_store(str(tmp_path / "fresh.db")) as store:
        assert await schema_diff(store) == []
        assert await revision(store) == head()


@pytest.mark.anyio
async def test_sqlite_an_empty_database_differs_from_the_metadata(tmp_path: Path) -> None:
    """The comparison itself can fail: without migrations every table is missing."""
    async with open_store(str(tmp_path / "empty.db"), migrate=False) as store:
        diff = await schema_diff(store)
    added = {op[1].name for op in diff if op[0] == "add_table"}
    assert added == set(metadata.tables)
    assert {"runs", "jobs", "attempt_errors"} <= added


@pytest.mark.anyio
async def test_sqlite_upgrading_again_changes_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "twice.db")
    async with open_store(path):
        pass
    async with open_store(path) as store:
        await upgrade(store.engine)
        assert await schema_diff(store) == []
        assert await revision(store) == head()


@pytest.mark.anyio
async def test_postgresql_a_fresh_database_gets_the_metadata_stamped_at_head() -> None:
    async with fresh_postgres_database() as url, open_store(url) as store:
        assert store.engine.dialect.name == "postgresql"
        assert await schema_diff(store) == []
        assert await revision(store) == head()


@pytest.mark.anyio
async def test_postgresql_every_migration_in_turn_builds_the_metadata() -> None:
    async with fresh_postgres_database() as url:
        await migrate_from_scratch(url)
        async with open_store(url, migrate=False) as store:
            assert await schema_diff(store) == []
            assert await revision(store) == head()


@pytest.mark.anyio
async def test_postgresql_first_runs_at_once_all_get_the_schema() -> None:
    # Separate processes, as separate runs are. Without a lock, one of three lost the race:
    # a duplicate pg_type row, exit 2.
    opener = (
        "import anyio, sys\n"
        "from runner.store.connect import open_store\n"
        "async def main():\n"
        "    async with open_store(sys.argv[1]):\n"
        "        pass\n"
        "anyio.run(main)\n"
    )
    async with fresh_postgres_database() as url:
        results: list[int] = []

        async def open_once() -> None:
            done = await anyio.run_process([sys.executable, "-c", opener, url], check=False)
            results.append(done.returncode)

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(open_once)
        async with open_store(url, migrate=False) as store:
            assert await revision(store) == HEAD_REVISION
    assert results == [0, 0, 0]
