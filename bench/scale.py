"""Throughput, ingest, memory, resume and scaling against an emulator in its own process.

Every case runs the real `runner` command as a subprocess (so wall time and peak RSS are the
command's own) against `runner mock-server` with no limits and no latency, also in its own
process. The baseline is a plain aiohttp client with the same concurrency that persists nothing
and appends responses to a file.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import aiohttp
import anyio
import orjson

CONCURRENCY = 64
KEY = "sk-bench-0000000000"


def write_jobs(path: Path, count: int, text_chars: int = 60, non_ascii: bool = False) -> Path:
    """A deterministic job file of `count` OpenAI Batch lines."""
    filler = ("ሰላም ዓለም " if non_ascii else "lorem ipsum ") * (text_chars // 10 + 1)
    with path.open("wb", buffering=4 * 1024 * 1024) as fh:
        for i in range(count):
            body = {
                "model": "selam-turbo",
                "messages": [{"role": "user", "content": f"{i}: {filler[:text_chars]}"}],
                "max_tokens": 16,
            }
            fh.write(orjson.dumps({"custom_id": f"job-{i}", "body": body}) + b"\n")
    return path


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmulatorProcess:
    """`runner mock-server` in a separate process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runner", "mock-server", "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("the emulator did not start")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()


@dataclass
class Measured:
    """Wall time, CPU time and peak RSS of one command."""

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    code: int


def run_command(args: list[str], env: dict[str, str], cwd: Path) -> Measured:
    """Run a command to completion, measuring it with wait4."""
    started = time.monotonic()
    proc = subprocess.Popen(
        args, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 3) and proc.stderr is not None:
        sys.stderr.write(proc.stderr.read().decode()[-2000:])
    return Measured(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode)


def runner_env(base_url: str) -> dict[str, str]:
    """Environment pointing the runner at the emulator."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(SELAM_API_KEY=KEY, SELAM_BASE_URL=base_url)
    return env


def runner_args(jobs: Path, db: Path, *extra: str) -> list[str]:
    """`runner run` with the benchmark's settings."""
    return [
        sys.executable,
        "-m",
        "runner",
        "run",
        str(jobs),
        "--db",
        str(db),
        "--concurrency",
        str(CONCURRENCY),
        "--progress",
        "off",
        "--cache",
        "off",
        "--quiet",
        *extra,
    ]


async def plain_client(lines: list[bytes], out: BinaryIO, base_url: str) -> float:
    """The baseline: fixed concurrency, no persistence but an appended results file."""
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        queue = iter(lines)

        async def worker() -> None:
            for line in queue:
                body = orjson.dumps(orjson.loads(line)["body"])
                async with session.post(f"{base_url}/chat/completions", data=body) as resp:
                    out.write(await resp.read() + b"\n")

        async with anyio.create_task_group() as tg:
            for _ in range(CONCURRENCY):
                tg.start_soon(worker)
    return time.monotonic() - started


def throughput(workdir: Path, count: int = 20_000) -> list[object]:
    """Jobs per second, file in to results out, against the plain client."""
    jobs = write_jobs(workdir / "tp.jsonl", count)
    emulator = EmulatorProcess()
    try:
        with (workdir / "plain.out").open("wb") as out:
            base = anyio.run(plain_client, jobs.read_bytes().splitlines(), out, emulator.base_url)
        measured = run_command(
            runner_args(jobs, workdir / "tp.db"), runner_env(emulator.base_url), workdir
        )
    finally:
        emulator.close()
    lines = sum(1 for _ in (workdir / "tp.results.jsonl").open("rb"))
    assert lines == count, f"{lines} result lines for {count} jobs"
    plain_rate, ours = count / base, count / measured.wall_s
    return [
        f"throughput, {count:,} jobs",
        f"{ours:,.0f} jobs/s vs plain {plain_rate:,.0f}",
        f"{ours / plain_rate:.2f}x",
        ">= 0.75x",
        ours / plain_rate >= 0.75,
    ]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        print(throughput(Path(tmp), int(sys.argv[1]) if len(sys.argv) > 1 else 20_000))
