"""Throughput, ingest, memory, resume and scaling against an emulator in its own process.

Every case runs the real `runner` command as a subprocess (so wall time and peak RSS are the
command's own) against `runner mock-server` with no limits and no latency, also in its own
process. The baseline is a plain aiohttp client with the same concurrency that persists nothing
and appends responses to a file.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import anyio
import orjson

from bench.plain import CONCURRENCY, KEY, plain_client
from bench.table import print_table, save
from runner.clock import SystemClock
from runner.ingest import prepare_run
from runner.output import ResultsFile
from runner.store.connect import open_store

REPO = Path(__file__).resolve().parents[1]


def write_jobs(path: Path, count: int, text_chars: int = 60, non_ascii: bool = False) -> Path:
    """A deterministic job file of `count` OpenAI Batch lines."""
    unit = "ሰላም ዓለም " if non_ascii else "lorem ipsum "
    filler = unit * (text_chars // len(unit) + 1)
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


def throughput(workdir: Path, count: int = 20_000, rounds: int = 3) -> list[list[object]]:
    """Jobs per second, file in to results out, against the plain client.

    Both run as commands of their own, timed from start to exit, reading the job file and
    writing a results file. The machine is shared and noisy, so they alternate for `rounds`
    rounds against one emulator and the medians are compared. For reference: the plain
    client's request loop alone (no interpreter start, imports or file reading), and the same
    on uvloop, the event loop the runner uses.
    """
    jobs = write_jobs(workdir / "tp.jsonl", count)
    lines = jobs.read_bytes().splitlines()
    rates: dict[str, list[float]] = {"runner": [], "plain": [], "loop": [], "uvloop": []}
    emulator = EmulatorProcess()
    env = runner_env(emulator.base_url)
    try:
        for i in range(rounds):
            plain_out = workdir / "plain.out"
            plain = [sys.executable, "-m", "bench.plain", str(jobs), str(plain_out)]
            measured = run_command([*plain, emulator.base_url], env, REPO)
            assert _result_lines(plain_out) == count, "the plain client's results are incomplete"
            rates["plain"].append(count / measured.wall_s)
            with plain_out.open("wb") as out:
                rates["loop"].append(count / anyio.run(plain_client, lines, out, emulator.base_url))
            with plain_out.open("wb") as out:
                uvloop = {"use_uvloop": True}
                elapsed = anyio.run(
                    plain_client, lines, out, emulator.base_url, backend_options=uvloop
                )
                rates["uvloop"].append(count / elapsed)
            db, results = workdir / f"tp-{i}.db", workdir / f"tp-{i}.results.jsonl"
            measured = run_command(runner_args(jobs, db, "--out", str(results)), env, workdir)
            assert _result_lines(results) == count, f"results of {count} jobs are incomplete"
            rates["runner"].append(count / measured.wall_s)
    finally:
        emulator.close()
    ours, plain_rate = (statistics.median(rates[k]) for k in ("runner", "plain"))
    ratio = ours / plain_rate

    def reference(what: str, key: str) -> list[object]:
        rate = statistics.median(rates[key])
        return [what, f"{rate:,.0f} jobs/s", f"{ours / rate:.2f}x", "-", "-"]

    pairs = zip(rates["runner"], rates["plain"], strict=True)
    each = ", ".join(f"{o:,.0f}/{p:,.0f}" for o, p in pairs)
    return [
        [
            f"throughput, {count:,} jobs (median of {rounds})",
            f"{ours:,.0f} jobs/s vs plain {plain_rate:,.0f}",
            f"{ratio:.2f}x",
            ">= 0.75x",
            ratio >= 0.75,
        ],
        ["  each round: runner / plain", each, "-", "-", "-"],
        reference("  reference: plain client's request loop only", "loop"),
        reference("  reference: the same on uvloop", "uvloop"),
    ]


def _result_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


def ingest(workdir: Path, count: int = 1_000_000) -> list[object]:
    """Queueing a large file: lines per second, in-process (parse, validate, insert)."""
    jobs = write_jobs(workdir / "ingest.jsonl", count)

    async def go() -> float:
        async with open_store(str(workdir / "ingest.db")) as store:
            started = time.monotonic()
            await prepare_run(
                store,
                jobs,
                workdir / "ingest.out",
                restart=False,
                clock=SystemClock(),
                max_line_bytes=10 * 2**20,
                owner="bench",
            )
            return time.monotonic() - started

    rate = count / anyio.run(go)
    return [
        f"ingest, {count:,} lines",
        f"{rate:,.0f} lines/s",
        f"{rate / 100_000:.2f}x",
        ">= 100,000 lines/s",
        rate >= 100_000,
    ]


def full_runs(workdir: Path, sizes: list[int]) -> list[list[object]]:
    """Whole runs of growing files: peak RSS and CPU time per job must stay flat."""
    emulator = EmulatorProcess()
    measured: dict[int, Measured] = {}
    try:
        for count in sizes:
            jobs = write_jobs(workdir / f"full-{count}.jsonl", count)
            measured[count] = run_command(
                runner_args(jobs, workdir / f"full-{count}.db"),
                runner_env(emulator.base_url),
                workdir,
            )
            lines = _result_lines(workdir / f"full-{count}.results.jsonl")
            assert lines == count, f"{lines} result lines for {count} jobs"
    finally:
        emulator.close()
    small, large = measured[sizes[0]], measured[sizes[-1]]
    rss_ratio = large.peak_rss_mb / small.peak_rss_mb
    cpu = {n: m.cpu_s / n * 1e6 for n, m in measured.items()}
    cpu_ratio = cpu[sizes[-1]] / cpu[sizes[0]]
    rows: list[list[object]] = []
    for n, m in measured.items():
        rows.append(
            [
                f"full run, {n:,} jobs",
                f"{n / m.wall_s:,.0f} jobs/s, {cpu[n]:.0f} us CPU/job,"
                f" peak RSS {m.peak_rss_mb:.0f} MB",
                "-",
                "-",
                "-",
            ]
        )
    rows.append(
        [
            f"memory, {sizes[-1]:,} vs {sizes[0]:,} jobs",
            f"{large.peak_rss_mb:.0f} MB vs {small.peak_rss_mb:.0f} MB",
            f"{rss_ratio:.2f}x",
            "<= 150 MB and <= 1.10x",
            large.peak_rss_mb <= 150 and rss_ratio <= 1.10,
        ]
    )
    rows.append(
        [
            f"CPU per job, {sizes[-1]:,} vs {sizes[0]:,}",
            f"{cpu[sizes[-1]]:.0f} vs {cpu[sizes[0]]:.0f} us",
            f"{cpu_ratio:.2f}x",
            # Growth is what a per-claim scan or per-job commit would show; the smaller run
            # carries the fixed start-up cost (imports, migrations) over fewer jobs.
            "no growth (<= 1.20x)",
            cpu_ratio <= 1.20,
        ]
    )
    return rows


def resume(workdir: Path, count: int = 1_000_000, done: int = 990_000) -> list[object]:
    """With `done` of `count` jobs finished, how soon the re-run's first request leaves."""
    jobs = write_jobs(workdir / "resume.jsonl", count)
    db = workdir / "resume.db"
    out = workdir / "resume.results.jsonl"

    async def build() -> None:
        async with open_store(str(db)) as store:
            result = await prepare_run(
                store,
                jobs,
                out,
                restart=False,
                clock=SystemClock(),
                max_line_bytes=10 * 2**20,
                owner="bench",
            )
            await store.release(result.run.id, "bench", time.time(), 0.0, "interrupted")
        _mark_done(db, done)
        async with open_store(str(db)) as store:
            run = await store.find_run(str(out))
            assert run is not None
            results = ResultsFile(out, store, run.id)
            results.open(0, 0)
            seq, offset = await results.export()
            results.close()
            await store.set_watermark(run.id, seq, offset)

    anyio.run(build)
    emulator = EmulatorProcess()
    try:
        started = time.monotonic()
        proc = subprocess.Popen(
            runner_args(jobs, db, "--max-runtime", "5"),
            env=runner_env(emulator.base_url),
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        first = _first_request_s(emulator.base_url, started)
        proc.wait()
    finally:
        emulator.close()
    return [
        f"resume, {done:,} of {count:,} done",
        f"first request after {first:.2f} s",
        f"{first / 2:.2f}x",
        "<= 2 s",
        first <= 2.0,
    ]


def _mark_done(db: Path, done: int) -> None:
    body = orjson.dumps({"id": "c", "choices": [{"index": 0, "message": {"content": "x"}}]})
    con = sqlite3.connect(db)
    with con:
        con.execute(
            "UPDATE jobs SET state='done', done_seq=id, status_code=200, response=?, "
            "finished_at=0 WHERE id <= ?",
            (body, done),
        )
        con.execute("UPDATE runs SET next_seq=?", (done,))
    con.close()


def _first_request_s(base_url: str, started: float) -> float:
    stats_url = base_url.removesuffix("/v1") + "/emulator/stats"

    async def poll() -> float:
        async with aiohttp.ClientSession() as session:
            while time.monotonic() - started < 60:
                async with session.get(stats_url) as resp:
                    if (await resp.json())["requests"] > 0:
                        return time.monotonic() - started
                await anyio.sleep(0.01)
        return float("inf")

    return anyio.run(poll)


def big_lines(workdir: Path) -> list[list[object]]:
    """Lines of 50-500 KB of non-ASCII text: time per MB stays flat; an 11 MB line is refused."""
    emulator = EmulatorProcess()
    rates = {}
    try:
        for size_kb, count in ((50, 400), (500, 40)):
            # The Amharic filler averages 2.5 bytes a character.
            jobs = write_jobs(
                workdir / f"big-{size_kb}.jsonl",
                count,
                text_chars=size_kb * 1024 * 2 // 5,
                non_ascii=True,
            )
            megabytes = jobs.stat().st_size / 2**20
            measured = run_command(
                runner_args(jobs, workdir / f"big-{size_kb}.db"),
                runner_env(emulator.base_url),
                workdir,
            )
            rates[size_kb] = megabytes / measured.wall_s
        huge = write_jobs(
            workdir / "huge.jsonl", 1, text_chars=11 * 2**20 * 2 // 5 + 1000, non_ascii=True
        )
        refused = subprocess.run(
            runner_args(huge, workdir / "huge.db")[:-1],
            env=runner_env(emulator.base_url),
            cwd=workdir,
            capture_output=True,
            text=True,
        )
    finally:
        emulator.close()
    ratio = rates[500] / rates[50]
    named = refused.returncode == 2 and ":1: line is longer" in refused.stderr
    return [
        [
            "big lines, 500 KB vs 50 KB",
            f"{rates[500]:.1f} vs {rates[50]:.1f} MB/s",
            f"{ratio:.2f}x",
            "no quadratic slowdown (>= 0.5x)",
            ratio >= 0.5,
        ],
        [
            "an 11 MB line (limit 10 MB)",
            f"exit {refused.returncode}, line named: {named}",
            "-",
            "exit 2 naming the line",
            named,
        ],
    ]


def main() -> None:
    """Run every case and print the table."""
    sizes = [int(n) for n in os.environ.get("BENCH_SIZES", "10000,100000,1000000").split(",")]
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rows.extend(throughput(workdir))
        rows.append(ingest(workdir, sizes[-1]))
        rows.extend(full_runs(workdir, sizes))
        rows.append(resume(workdir, sizes[-1], sizes[-1] * 99 // 100))
        rows.extend(big_lines(workdir))
    columns = ["case", "measured", "ratio", "target", "pass"]
    table = [
        [*row[:-1], "yes" if row[-1] is True else ("NO" if row[-1] is False else "-")]
        for row in rows
    ]
    print_table(f"Scale (concurrency {CONCURRENCY}, emulator in its own process)", columns, table)
    save("scale", columns, table)


if __name__ == "__main__":
    main()
