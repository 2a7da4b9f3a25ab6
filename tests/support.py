"""Test helpers: job lines, an emulator on a loopback port, running a job, reading results."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import asyncpg  # type: ignore[import-untyped]
import orjson

from runner.app import ApiTarget, RunReport, run_job
from runner.clock import SystemClock
from runner.config import RunOptions
from runner.emulator import Emulator, EmulatorConfig, serve_emulator

TEST_KEY = "sk-selam-test-0123456789abcdef"
POSTGRES_SERVER = "postgres@127.0.0.1:5432"
ROOT = Path(__file__).resolve().parents[1]


def chat_body(text: str, model: str = "selam-turbo", **extra: Any) -> dict[str, Any]:
    """A minimal chat-completion body whose user message is `text`."""
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def batch_line(custom_id: str, body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An OpenAI Batch input line."""
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    line.update(extra)
    return line


def numbered_jobs(path: Path, count: int) -> Path:
    """A Batch-format file of `count` distinct jobs, custom_ids job-0000, job-0001, ..."""
    lines = [batch_line(f"job-{i:04}", chat_body(f"question {i}")) for i in range(count)]
    return write_jsonl(path, lines)


def write_jsonl(path: Path, lines: Iterable[dict[str, Any] | str]) -> Path:
    """Write JSONL lines (dicts, or raw strings kept as they are)."""
    with path.open("wb") as fh:
        for line in lines:
            raw = line.encode() if isinstance(line, str) else orjson.dumps(line)
            fh.write(raw + b"\n")
    return path


@asynccontextmanager
async def emulator(**settings: Any) -> AsyncIterator[tuple[Emulator, ApiTarget]]:
    """The built-in emulator on a free loopback port, requiring TEST_KEY."""
    # A generous limit by default, so responses carry rate-limit headers the limiter learns from.
    settings.setdefault("limit_requests", 100_000)
    config = EmulatorConfig(api_key=TEST_KEY, **settings)
    async with serve_emulator(config) as (emu, base_url):
        yield emu, ApiTarget(base_url, TEST_KEY, mock=False)


async def run(jobs: Path, target: ApiTarget, tmp_path: Path, **options: Any) -> RunReport:
    """Run a job file through the real engine with a SQLite file in tmp_path."""
    options.setdefault("db", str(tmp_path / "runner.db"))
    options.setdefault("progress", "off")
    out = options.pop("out", None) or RunOptions.default_out_path(jobs)
    return await run_job(RunOptions(jobs, out, **options), target, SystemClock())


def read_results(path: Path) -> list[dict[str, Any]]:
    """Every line of a results file, parsed; fails on a torn or invalid line."""
    raw = path.read_bytes()
    assert raw == b"" or raw.endswith(b"\n"), "the file ends in a torn line"
    return [orjson.loads(line) for line in raw.splitlines()]


def cli_env(base_url: str, key: str = TEST_KEY) -> dict[str, str]:
    """Environment for a `runner` subprocess pointed at an emulator."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(SELAM_API_KEY=key, SELAM_BASE_URL=base_url, PYTHONUNBUFFERED="1")
    return env


RUNNER_CMD = [sys.executable, "-m", "runner"]


async def cli(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run `runner ARGS` as a subprocess; return its exit code, stdout and stderr."""
    result = await anyio.run_process([*RUNNER_CMD, *args], env=env, cwd=cwd, check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


@asynccontextmanager
async def fresh_postgres_database(prefix: str = "runner_test") -> AsyncIterator[str]:
    """A throwaway database on the local test server, so other users of `test` are undisturbed."""
    name = f"{prefix}_{os.getpid()}_{os.urandom(4).hex()}"
    admin = await asyncpg.connect(f"postgresql://{POSTGRES_SERVER}/test")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql://{POSTGRES_SERVER}/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
