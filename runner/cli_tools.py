"""Commands around the runner: the emulator, a health check, database upgrades."""

from __future__ import annotations

import sys
from typing import Any

import anyio
import click

from runner.cli_common import Finite, call, db_option
from runner.config import Environment
from runner.errors import UsageError
from runner.store.connect import open_store
from runner.store.migrate import upgrade


@click.command("mock-server")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8808, show_default=True)
@click.option(
    "--rpm",
    "limit_requests",
    type=click.IntRange(1),
    default=None,
    help="Requests allowed per window (per minute with the default --window-s 60).",
)
@click.option("--window-s", type=Finite(min=0.001), default=60.0, show_default=True)
@click.option(
    "--tpm", "limit_tokens", type=click.IntRange(1), default=None, help="Tokens allowed per window."
)
@click.option("--daily-limit", type=click.IntRange(1), default=None)
@click.option("--latency-ms", type=Finite(0), default=0.0, show_default=True)
@click.option("--fail-rate", type=Finite(0, 1), default=0.0, show_default=True)
@click.option(
    "--dialect",
    type=click.Choice(["selam", "openai", "ietf", "ietf-structured", "none"]),
    default="selam",
    show_default=True,
    help="Which rate-limit headers to send.",
)
@click.option("--api-key", default=None, help="Accept only this key (default: any).")
def mock_server(host: str, port: int, **settings: Any) -> None:
    """Serve the built-in emulator of the chat-completions API."""
    from runner.emulator import EmulatorConfig, serve_emulator  # its server is not needed elsewhere

    config = EmulatorConfig(**settings)

    async def go() -> None:
        try:
            async with serve_emulator(config, host, port) as (_, base_url):
                click.echo(f"emulator listening on {base_url} (Ctrl-C to stop)")
                await anyio.sleep_forever()
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None

    call(go)


@click.command("health")
@click.option("--model", default="selam-turbo", show_default=True, help="For the fallback call.")
@click.option("--timeout", "timeout_s", type=Finite(0.1), default=15.0, show_default=True)
def health(model: str, timeout_s: float) -> None:
    """Check the key and the connection: exit 0 ok, 4 refused, 5 unreachable (2: no key or
    an unusable base URL)."""
    env = Environment.from_process()
    secrets = (env.api_key,) if env.api_key else ()

    async def go() -> int:
        from runner.health import check  # aiohttp, which only this command needs

        key = env.require_key(mock_hint=False)
        verdict = await check(env.require_base_url(), key, model, timeout_s)
        click.echo(("ok: " if verdict.code == 0 else "not ok: ") + verdict.reason)
        return verdict.code

    sys.exit(call(go, secrets))


@click.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@db_option
def db_upgrade(db: str | None) -> None:
    """Apply every pending migration."""
    env = Environment.from_process()

    async def go() -> None:
        async with open_store(db or env.db, migrate=False) as store:
            await upgrade(store.engine)

    call(go)
    click.echo("database is up to date")
