"""Bring a database to the newest schema with the Alembic migrations in `migrations/`."""

from __future__ import annotations

from pathlib import Path

import anyio
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the project's migrations, optionally bound to a connection."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


# Alembic's `context` in env.py is a module-level proxy, so two upgrades interleaving on one
# event loop would run against each other's connection; this lock serialises them.
_UPGRADE_LOCK = anyio.Lock()


def _is_current(connection: Connection) -> bool:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return MigrationContext.configure(connection).get_current_revision() == head


def _upgrade(connection: Connection) -> None:
    # Imported here: the command module pulls in most of Alembic, which only an upgrade needs.
    from alembic import command

    command.upgrade(alembic_config(connection), "head")


async def upgrade(engine: AsyncEngine) -> None:
    """Apply every pending migration in one transaction (a cheap check when there is none)."""
    async with engine.connect() as conn:
        if await conn.run_sync(_is_current):
            return
    async with _UPGRADE_LOCK, engine.begin() as conn:
        await conn.run_sync(_upgrade)
