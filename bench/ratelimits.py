"""How close to a provider's limit the runner gets, per header dialect, against the emulator.

Each case runs a job file through the real engine against an emulator enforcing a strict
sliding window (60 requests per 10 s unless noted) for at least four windows, and reports
achieved rate / allowed rate and the share of requests answered 429. A plain fixed-concurrency
aiohttp client that only honours Retry-After is the baseline row. All cases run at once (each
has its own emulator and database), so the table takes about one case's time.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson

from bench.table import print_table, save
from runner.app import ApiTarget, run_job
from runner.clock import SystemClock
from runner.config import RunOptions
from runner.emulator import Emulator, EmulatorConfig, serve_emulator

KEY = "sk-bench-0000000000"
LIMIT, WINDOW_S = 60, 10.0
JOBS = 300  # five windows' worth at the allowed rate
MAX_TOKENS = 16


@dataclass(frozen=True)
class Case:
    """One row of the table."""

    name: str
    emulator: dict[str, Any]
    jobs: int = JOBS
    baseline: bool = False
    target_ratio: float = 0.95
    target_429: float = 0.01
    note: str = ""


@dataclass
class Row:
    """What one case measured."""

    case: Case
    done: int = 0
    elapsed_s: float = 0.0
    requests: int = 0
    rate_limited: int = 0
    allowed_rps: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        achieved = self.done / self.elapsed_s if self.elapsed_s else 0.0
        return achieved / self.allowed_rps if self.allowed_rps else 0.0

    @property
    def share_429(self) -> float:
        return self.rate_limited / self.requests if self.requests else 0.0


def _jobs_file(path: Path, count: int) -> Path:
    with path.open("wb") as fh:
        for i in range(count):
            body = {
                "model": "selam-turbo",
                "messages": [{"role": "user", "content": f"Summarise item {i}: " + "lorem " * 20}],
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
            }
            fh.write(orjson.dumps({"custom_id": f"job-{i}", "body": body}) + b"\n")
    return path


def _allowed_rps(config: EmulatorConfig, tokens_per_job: float) -> float:
    rates = []
    if config.limit_requests:
        rates.append(config.limit_requests / config.window_s)
    if config.limit_tokens:
        rates.append(config.limit_tokens / config.window_s / tokens_per_job)
    return min(rates)


def _measured(emu: Emulator) -> tuple[int, int, float]:
    times = emu.stats.admitted_times
    span = (times[-1] - times[0]) if len(times) > 1 else 0.0
    return emu.stats.requests, emu.stats.rate_limited, span


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name)


async def _runner_case(case: Case, workdir: Path) -> Row:
    config = EmulatorConfig(api_key=KEY, **case.emulator)
    workdir = workdir / _slug(case.name)
    workdir.mkdir()
    jobs = _jobs_file(workdir / "jobs.jsonl", case.jobs)
    async with serve_emulator(config) as (emu, base_url):
        options = RunOptions(
            jobs,
            workdir / "jobs.results.jsonl",
            str(workdir / "runner.db"),
            concurrency=8,
            progress="off",
        )
        started = time.monotonic()
        report = await run_job(options, ApiTarget(base_url, KEY, mock=False), SystemClock())
        elapsed = time.monotonic() - started
    requests, limited, _ = _measured(emu)
    tokens_per_job = emu.stats.tokens / max(1, emu.stats.by_status.get(200, 1))
    row = Row(case, report.counts.get("done", 0), elapsed, requests, limited)
    row.allowed_rps = _allowed_rps(config, tokens_per_job)
    if case.emulator.get("daily_limit"):
        row.extra["after_quota"] = requests - case.emulator["daily_limit"]
        row.extra["exit_stop"] = report.stats.stop.kind if report.stats.stop else None
    return row


async def _baseline_case(case: Case, workdir: Path) -> Row:
    """Fixed concurrency, no pacing; a 429 sleeps for Retry-After and tries again."""
    config = EmulatorConfig(api_key=KEY, **case.emulator)
    jobs = _jobs_file(workdir / "baseline.jsonl", case.jobs).read_bytes().splitlines()
    done = 0
    async with (
        serve_emulator(config) as (emu, base_url),
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session,
    ):
        limiter = anyio.Semaphore(8)

        async def one(line: bytes) -> None:
            nonlocal done
            body = orjson.dumps(orjson.loads(line)["body"])
            async with limiter:
                while True:
                    async with session.post(f"{base_url}/chat/completions", data=body) as resp:
                        await resp.read()
                        if resp.status == 200:
                            done += 1
                            return
                        await anyio.sleep(float(resp.headers.get("Retry-After", "1")))

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            for line in jobs:
                tg.start_soon(one, line)
        elapsed = time.monotonic() - started
    requests, limited, _ = _measured(emu)
    row = Row(case, done, elapsed, requests, limited)
    row.allowed_rps = _allowed_rps(config, 1.0)
    return row


def cases() -> list[Case]:
    """The table's rows."""
    window = {"limit_requests": LIMIT, "window_s": WINDOW_S, "limit_tokens": 100_000}
    return [
        Case("selam headers (Reset epoch s)", {**window, "dialect": "selam"}),
        Case(
            "selam headers (Reset epoch ms)",
            {**window, "dialect": "selam", "selam_reset_format": "epoch_ms"},
        ),
        Case("openai headers", {**window, "dialect": "openai"}),
        Case(
            "openai, tokens bind (2400 tok/10s)",
            {
                "limit_requests": LIMIT,
                "window_s": WINDOW_S,
                "limit_tokens": 2400,
                "dialect": "openai",
            },
            jobs=200,
        ),
        Case("ietf headers (RateLimit-*)", {**window, "dialect": "ietf"}),
        Case("ietf structured (RateLimit-Policy)", {**window, "dialect": "ietf-structured"}),
        Case(
            "no headers (429 + Retry-After only)",
            {**window, "dialect": "none"},
            target_ratio=0.85,
            target_429=0.05,
        ),
        Case(
            "baseline: fixed concurrency 8",
            {**window, "dialect": "none"},
            baseline=True,
            target_ratio=0.0,
            target_429=1.0,
            note="reference",
        ),
        Case(
            "daily quota 40/day, 100 jobs",
            {"daily_limit": 40, "limit_requests": LIMIT, "window_s": WINDOW_S, "dialect": "selam"},
            jobs=100,
            target_ratio=0.0,
            target_429=1.0,
            note="stop",
        ),
    ]


async def main() -> list[Row]:
    """Run every case at once; print and save the table."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)

        async def go(case: Case) -> None:
            runner = _baseline_case if case.baseline else _runner_case
            rows.append(await runner(case, workdir))

        wanted = os.environ.get("BENCH_CASES", "")
        async with anyio.create_task_group() as tg:
            for case in cases():
                if wanted in case.name:
                    tg.start_soon(go, case)
    order = {c.name: i for i, c in enumerate(cases())}
    rows.sort(key=lambda r: order[r.case.name])
    columns = ["case", "jobs done", "seconds", "achieved/allowed", "429 share", "target", "pass"]
    table = [_table_row(r) for r in rows]
    print_table("Rate limits: achieved vs allowed (60 req / 10 s sliding window)", columns, table)
    save("ratelimits", columns, table)
    return rows


def _table_row(row: Row) -> list[object]:
    case = row.case
    if case.note == "stop":
        after = row.extra.get("after_quota", 0)
        verdict = "yes" if after <= 5 and row.extra.get("exit_stop") == "quota" else "NO"
        target = "stop; <=5 sent after quota"
        return [
            case.name,
            row.done,
            row.elapsed_s,
            f"{after} sent after quota",
            "-",
            target,
            verdict,
        ]
    if case.note == "reference":
        return [case.name, row.done, row.elapsed_s, row.ratio, row.share_429, "-", "-"]
    ok = row.ratio >= case.target_ratio and row.share_429 < case.target_429
    target = f">={case.target_ratio:.2f}, <{case.target_429:.0%} 429"
    return [
        case.name,
        row.done,
        row.elapsed_s,
        row.ratio,
        row.share_429,
        target,
        "yes" if ok else "NO",
    ]
