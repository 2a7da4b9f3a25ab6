"""The command line as a user runs it: a subprocess against the emulator on loopback."""

from __future__ import annotations

import random
import signal
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process

from tests.support import (
    RUNNER_CMD,
    TEST_KEY,
    batch_line,
    chat_body,
    cli,
    cli_env,
    emulator,
    read_results,
    write_jsonl,
)

pytestmark = pytest.mark.anyio


async def test_sigkill_at_random_moments_then_rerun_leaves_exactly_one_line_per_job(
    tmp_path: Path,
) -> None:
    """Killed with SIGKILL at least five times mid-run, re-runs end with one line per job."""
    jobs = write_jsonl(
        tmp_path / "jobs.jsonl",
        [batch_line(f"job-{i:04}", chat_body(f"question {i}")) for i in range(400)],
    )
    out = tmp_path / "jobs.results.jsonl"
    args = ["run", str(jobs), "--db", str(tmp_path / "r.db"), "--concurrency", "8"]
    rng = random.Random(20261203)
    # 400 jobs x 100 ms / 8 in flight: about 5 s of sending, so six kills land before the end
    # (with 20 ms the run outpaced the kills once start-up got faster, and the loop never ended).
    async with emulator(latency_ms=100) as (emu, target):
        env = cli_env(target.base_url)
        kills = 0
        progress: list[int] = []
        for _ in range(20):
            if kills == 6:
                break
            process: Process = await anyio.open_process([*RUNNER_CMD, *args], env=env, cwd=tmp_path)
            async with process:
                await anyio.sleep(rng.uniform(0.6, 1.5))
                if process.returncode is None:
                    process.send_signal(signal.SIGKILL)
                    kills += 1
                await process.wait()
            if out.exists():
                # A kill may tear the last line; the next run cuts it off. Count whole lines.
                progress.append(out.read_bytes().count(b"\n"))
        code, _, stderr = await cli(args, env, tmp_path)
    assert code == 0, stderr
    lines = read_results(out)
    ids = [line["custom_id"] for line in lines]
    assert len(ids) == len(set(ids)) == 400
    assert all(line["error"] is None for line in lines)
    assert kills >= 5
    # The kills landed mid-run: some lines existed before the end, and not all of them.
    assert any(0 < n < 400 for n in progress), progress
    assert emu.stats.requests >= 400


async def test_wrong_key_exits_4_after_few_requests_and_key_is_in_no_file(
    tmp_path: Path,
) -> None:
    """A refused key stops the run (exit 4) within `--concurrency` requests; no file holds it."""
    jobs = write_jsonl(
        tmp_path / "jobs.jsonl", [batch_line(f"j{i}", chat_body(f"q {i}")) for i in range(50)]
    )
    wrong_key = "sk-selam-WRONG-9f8e7d6c5b4a39281706"
    args = [
        "run",
        str(jobs),
        "--db",
        str(tmp_path / "r.db"),
        "--concurrency",
        "4",
        "--log-level",
        "debug",
    ]
    async with emulator() as (emu, target):
        code, stdout, stderr = await cli(args, cli_env(target.base_url, wrong_key), tmp_path)
    assert code == 4, stderr
    assert "refused the key" in stdout + stderr
    assert 1 <= emu.stats.requests <= 4
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.startswith("r.db") for p in written)
    for path in written:
        assert wrong_key.encode() not in path.read_bytes(), path
    assert wrong_key not in stdout + stderr
    assert TEST_KEY not in stdout + stderr


async def test_malformed_line_exits_2_naming_the_line(tmp_path: Path) -> None:
    """A bad line: exit 2, file and line named, nothing sent."""
    jobs = write_jsonl(
        tmp_path / "jobs.jsonl", [batch_line("ok", chat_body("fine")), '{"custom_id": "x",']
    )
    async with emulator() as (emu, target):
        code, _, stderr = await cli(["run", str(jobs)], cli_env(target.base_url), tmp_path)
    assert code == 2
    assert f"{jobs}:2: not valid JSON" in stderr
    assert emu.stats.requests == 0


async def test_no_key_and_no_mock_exits_2_saying_how_to_set_one(tmp_path: Path) -> None:
    """Without a key the run refuses to start and tells the user what to set."""
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [batch_line("a", chat_body("x"))])
    env = cli_env("http://127.0.0.1:9/v1")
    del env["SELAM_API_KEY"]
    code, _, stderr = await cli(["run", str(jobs)], env, tmp_path)
    assert code == 2
    assert "SELAM_API_KEY" in stderr and "--mock" in stderr


async def test_mock_run_of_bundled_example_completes_every_job(tmp_path: Path) -> None:
    """`runner run jobs/example.jsonl --mock` (what `make run` does) ends with every job done."""
    example = Path(__file__).resolve().parents[1] / "jobs" / "example.jsonl"
    jobs = tmp_path / "example.jsonl"
    jobs.write_bytes(example.read_bytes())
    env = cli_env("http://127.0.0.1:9/v1")
    del env["SELAM_API_KEY"]
    code, stdout, stderr = await cli(["run", str(jobs), "--mock"], env, tmp_path)
    assert code == 0, stderr
    count = sum(1 for line in example.read_bytes().splitlines() if line.strip())
    assert f"{count} done, 0 failed" in stdout
    assert len(read_results(tmp_path / "example.results.jsonl")) == count
