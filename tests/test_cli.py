"""The command line as a user runs it: a subprocess against the emulator on loopback."""

from __future__ import annotations

import random
import signal
import sqlite3
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
    assert len(read_results(tmp_path / "example.mock.results.jsonl")) == count


async def test_a_keyed_run_after_a_mock_run_neither_resumes_it_nor_serves_its_cache(
    tmp_path: Path,
) -> None:
    # `make run` without a key, then with one, resumed the emulator's run: 0 requests sent and
    # its answers kept; and deterministic requests were served from its cache.
    jobs = write_jsonl(
        tmp_path / "jobs.jsonl",
        [batch_line(f"j{i}", chat_body(f"q {i}", temperature=0)) for i in range(3)],
    )
    mock_env = cli_env("http://127.0.0.1:9/v1")
    del mock_env["SELAM_API_KEY"]
    code, _, stderr = await cli(["run", str(jobs), "--mock"], mock_env, tmp_path)
    assert code == 0, stderr
    async with emulator() as (emu, target):
        code, stdout, stderr = await cli(["run", str(jobs)], cli_env(target.base_url), tmp_path)
    assert code == 0, stderr
    assert emu.stats.requests == 3
    assert "cache: 0 hits" in stdout or "hits" not in stdout
    assert len(read_results(tmp_path / "jobs.results.jsonl")) == 3
    assert len(read_results(tmp_path / "jobs.mock.results.jsonl")) == 3


def _padded_jobs(path: Path, count: int) -> Path:
    """`count` jobs of about 180 bytes, written fast."""
    filler = "lorem ipsum " * 8
    with path.open("w") as fh:
        for i in range(count):
            body = f'{{"model":"m","messages":[{{"role":"user","content":"{i} {filler}"}}]}}'
            fh.write(f'{{"custom_id":"j{i}","body":{body}}}\n')
    return path


def _ingesting(db: Path) -> bool:
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1) as con:
            row = con.execute("SELECT state FROM runs").fetchone()
            queued = con.execute("SELECT count(*) FROM jobs").fetchone()[0]
    except sqlite3.Error:
        return False
    return row is not None and row[0] == "ingesting" and queued > 0


@pytest.mark.parametrize(
    ("signum", "count"),
    [(signal.SIGINT, 300_000), (signal.SIGTERM, 40_000)],
    ids=["SIGINT-parsed-in-a-second-process", "SIGTERM-parsed-here"],
)
async def test_a_signal_while_queueing_exits_3_at_once_and_leaves_nothing_half_queued(
    tmp_path: Path, signum: signal.Signals, count: int
) -> None:
    # Once: a 30 s wait on a lock a cancelled insert held, exit 70, and a run left "ingesting".
    jobs = _padded_jobs(tmp_path / "jobs.jsonl", count)
    db = tmp_path / "r.db"
    env = cli_env("http://127.0.0.1:9/v1")
    process = await anyio.open_process([*RUNNER_CMD, "run", str(jobs), "--db", str(db)], env=env)
    async with process:
        for _ in range(2000):  # another process's database: polling is all there is
            if _ingesting(db):
                break
            await anyio.sleep(0.01)
        else:
            pytest.fail("the run never started queueing")
        process.send_signal(signum)
        with anyio.fail_after(10):
            code = await process.wait()
        assert process.stderr is not None
        stderr = (await process.stderr.receive()).decode()
    assert code == 3, stderr
    assert f"interrupted by {signum.name} while queueing" in stderr
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


async def test_a_full_stdout_does_not_turn_a_finished_run_into_an_internal_error(
    tmp_path: Path,
) -> None:
    # Once exit 70, and the --summary-json file never written.
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [batch_line("a", chat_body("hi"))])
    summary = tmp_path / "summary.json"
    args = ["run", str(jobs), "--db", str(tmp_path / "r.db"), "--summary-json", str(summary)]
    async with emulator() as (_, target):
        with open("/dev/full", "wb") as full:
            done = await anyio.run_process(
                [*RUNNER_CMD, *args], env=cli_env(target.base_url), stdout=full, check=False
            )
    assert done.returncode == 0, done.stderr.decode()
    assert b"internal error" not in done.stderr
    assert summary.exists()
