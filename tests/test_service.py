"""Running it like a service: progress without a TTY, signals, caps, managing runs, overlap."""

from __future__ import annotations

import math
import signal
from pathlib import Path

import anyio
import orjson
import pytest

from runner.app import exit_code
from tests.support import (
    RUNNER_CMD,
    TEST_KEY,
    batch_line,
    chat_body,
    cli,
    cli_env,
    emulator,
    numbered_jobs,
    read_results,
    run,
    write_jsonl,
)

pytestmark = pytest.mark.anyio


def _jobs(tmp_path: Path, count: int, name: str = "jobs.jsonl") -> Path:
    return numbered_jobs(tmp_path / name, count)


async def test_progress_without_a_tty_is_plain_lines_and_every_file_is_free_of_the_key(
    tmp_path: Path,
) -> None:
    """Piped output gets periodic plain progress lines; no written file holds the key."""
    jobs = _jobs(tmp_path, 60)
    log_file = tmp_path / "logs" / "run.log"
    args = [
        "run",
        str(jobs),
        "--db",
        str(tmp_path / "r.db"),
        "--progress-interval",
        "0.2",
        "--log-level",
        "debug",
        "--log-file",
        str(log_file),
        "--log-format",
        "json",
        "--summary-json",
        str(tmp_path / "summary.json"),
        "--concurrency",
        "2",
    ]
    async with emulator(latency_ms=15) as (_, target):
        code, stdout, stderr = await cli(args, cli_env(target.base_url), tmp_path)
    assert code == 0, stderr
    progress = [line for line in stderr.splitlines() if " progress: " in line]
    assert len(progress) >= 2, stderr
    assert "finished" in progress[-1] and "req/min" in progress[-1]
    assert "\x1b[" not in stderr  # no terminal control codes when not on a TTY
    entries = [orjson.loads(line) for line in log_file.read_text().splitlines()]
    assert any(e["level"] == "debug" and "-> done" in e["msg"] for e in entries)
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["counts"] == {"done": 60} and summary["exit_code"] == 0
    for path in [p for p in tmp_path.rglob("*") if p.is_file()]:
        assert TEST_KEY.encode() not in path.read_bytes(), path
    assert TEST_KEY not in stdout + stderr


async def test_sigterm_mid_run_exits_3_then_resume_writes_one_line_per_job(
    tmp_path: Path,
) -> None:
    """SIGTERM stops dispatch, lets in-flight requests finish, exits 3; a re-run completes."""
    jobs = _jobs(tmp_path, 300)
    args = ["run", str(jobs), "--db", str(tmp_path / "r.db"), "--concurrency", "4"]
    async with emulator(latency_ms=30) as (emu, target):
        env = cli_env(target.base_url)
        async with await anyio.open_process([*RUNNER_CMD, *args], env=env, cwd=tmp_path) as proc:
            await anyio.sleep(1.5)
            proc.send_signal(signal.SIGTERM)
            code = await proc.wait()
            assert proc.stdout is not None
            stdout = (await proc.stdout.receive()).decode()
        assert code == 3
        assert "interrupted by SIGTERM" in stdout and "resume with: runner run" in stdout
        partial = read_results(tmp_path / "jobs.results.jsonl")
        assert 0 < len(partial) < 300
        code, _, stderr = await cli(args, env, tmp_path)
    assert code == 0, stderr
    ids = [line["custom_id"] for line in read_results(tmp_path / "jobs.results.jsonl")]
    assert len(ids) == len(set(ids)) == 300
    assert emu.stats.requests < 300 + 4 * 2


async def test_max_cost_stops_the_run_and_a_raised_cap_finishes_it(tmp_path: Path) -> None:
    """--max-cost stops dispatch (exit 3, jobs left pending); a higher cap completes the run."""
    jobs = _jobs(tmp_path, 40)
    price = ("selam-turbo=1000/1000",)  # $0.001 a token: a few jobs reach a cent
    async with emulator() as (emu, target):
        capped = await run(
            jobs, target, tmp_path, concurrency=1, max_cost=0.1, price_overrides=price
        )
        assert exit_code(capped) == 3
        assert capped.stats.stop is not None and capped.stats.stop.kind == "budget"
        assert 0 < capped.counts["done"] < 40
        assert capped.cost is not None and capped.cost >= 0.1
        # Nothing goes out past the cap but the one request in flight (concurrency 1); when
        # caps were checked at recording time, sending ran far ahead and all 40 went out.
        per_job = capped.cost / capped.counts["done"]
        assert capped.counts["done"] <= math.ceil(0.1 / per_job) + 1
        # Run again with the cap already reached: nothing more is sent (each cron tick used to
        # send one more request).
        sent_before = emu.stats.requests
        again = await run(
            jobs, target, tmp_path, concurrency=1, max_cost=0.1, price_overrides=price
        )
        assert exit_code(again) == 3 and again.stats.sent == 0
        assert emu.stats.requests == sent_before
        raised = await run(
            jobs, target, tmp_path, concurrency=1, max_cost=100.0, price_overrides=price
        )
    assert exit_code(raised) == 0
    assert raised.counts == {"done": 40}
    assert emu.stats.requests == 40


async def test_retry_failed_with_a_corrected_model_finishes_the_failed_jobs(
    tmp_path: Path,
) -> None:
    """Jobs failed by a 404 model error are re-queued with another model and succeed."""
    lines = [batch_line(f"ok-{i}", chat_body(f"fine {i}")) for i in range(3)]
    lines += [
        batch_line(f"bad-{i}", chat_body(f"typo {i}", model="missing-modle")) for i in range(2)
    ]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", lines)
    db = str(tmp_path / "r.db")
    async with emulator() as (_, target):
        env = cli_env(target.base_url)
        code, _, _ = await cli(["run", str(jobs), "--db", db], env, tmp_path)
        assert code == 1
        code, stdout, _ = await cli(
            ["retry-failed", "--db", db, "--only", "model_not_found", "--model", "selam-turbo"],
            env,
            tmp_path,
        )
        assert code == 0 and "2 failed job(s) queued again" in stdout
        code, _, stderr = await cli(["run", str(jobs), "--db", db], env, tmp_path)
    assert code == 0, stderr
    lines_out = read_results(tmp_path / "jobs.results.jsonl")
    assert sorted(line["custom_id"] for line in lines_out) == sorted(
        ["ok-0", "ok-1", "ok-2", "bad-0", "bad-1"]
    )
    by_id = {line["custom_id"]: line for line in lines_out}
    assert by_id["bad-0"]["error"] is None
    assert by_id["bad-0"]["response"]["body"]["model"] == "selam-turbo"


async def test_export_in_input_order_matches_the_input(tmp_path: Path) -> None:
    """`export --order input` writes lines in input order, whatever order jobs finished in."""
    lines = [
        batch_line(f"j{i}", chat_body(f"[emulate delay_ms={(9 - i) * 20}] q{i}")) for i in range(10)
    ]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", lines)
    db = str(tmp_path / "r.db")
    async with emulator() as (_, target):
        env = cli_env(target.base_url)
        code, _, _ = await cli(["run", str(jobs), "--db", db, "--concurrency", "10"], env, tmp_path)
        assert code == 0
        out = tmp_path / "ordered.jsonl"
        code, stdout, _ = await cli(
            ["export", "--db", db, "--out", str(out), "--order", "input"], env, tmp_path
        )
    assert code == 0 and "10 result line(s)" in stdout
    finished_order = [line["custom_id"] for line in read_results(tmp_path / "jobs.results.jsonl")]
    assert finished_order != [f"j{i}" for i in range(10)]
    assert [line["custom_id"] for line in read_results(out)] == [f"j{i}" for i in range(10)]


async def test_overlapping_invocation_of_the_same_run_exits_6_and_sends_nothing(
    tmp_path: Path,
) -> None:
    """A second `runner run` of a run in progress exits 6 at once; the first finishes alone."""
    jobs = _jobs(tmp_path, 100)
    args = ["run", str(jobs), "--db", str(tmp_path / "r.db"), "--concurrency", "2"]
    async with emulator(latency_ms=20) as (emu, target):
        env = cli_env(target.base_url)
        async with await anyio.open_process([*RUNNER_CMD, *args], env=env, cwd=tmp_path) as first:
            await anyio.sleep(1.2)
            sent_before = emu.stats.requests
            code, _, stderr = await cli(args, env, tmp_path)
            assert code == 6, stderr
            assert "being worked on by process" in stderr
            assert await first.wait() == 0
    assert sent_before > 0
    ids = [line["custom_id"] for line in read_results(tmp_path / "jobs.results.jsonl")]
    assert len(ids) == len(set(ids)) == 100
    assert emu.stats.requests == 100


async def test_cancel_fails_what_is_left_with_one_line_each(
    tmp_path: Path,
) -> None:
    """`runner cancel` after a quota stop gives every unfinished job a `cancelled` line."""
    lines = [batch_line("first", chat_body("fine"))]
    lines += [batch_line("quota", chat_body("[emulate quota] x"))]
    lines += [batch_line(f"rest-{i}", chat_body(f"r {i}")) for i in range(5)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", lines)
    db = str(tmp_path / "r.db")
    async with emulator() as (_, target):
        env = cli_env(target.base_url)
        code, _, _ = await cli(["run", str(jobs), "--db", db, "--concurrency", "1"], env, tmp_path)
        assert code == 3
        code, stdout, stderr = await cli(["cancel", "1", "--db", db], env, tmp_path)
    assert code == 0, stderr
    assert "6 job(s) cancelled" in stdout
    by_id = {line["custom_id"]: line for line in read_results(tmp_path / "jobs.results.jsonl")}
    assert len(by_id) == 7
    assert by_id["first"]["error"] is None
    assert by_id["rest-4"]["error"]["code"] == "cancelled"


async def test_health_reports_ok_refused_and_unreachable(tmp_path: Path) -> None:
    """`runner health` exits 0 with a good key, 4 with a refused one, 5 when nothing listens."""
    async with emulator() as (_, target):
        ok = await cli(["health"], cli_env(target.base_url), tmp_path)
        refused = await cli(["health"], cli_env(target.base_url, "sk-wrong-000000"), tmp_path)
    unreachable = await cli(["health"], cli_env("http://127.0.0.1:9/v1"), tmp_path)
    assert ok[0] == 0 and ok[1].startswith("ok:")
    assert refused[0] == 4 and "refused" in refused[1]
    assert unreachable[0] == 5 and "cannot reach" in unreachable[1]


async def test_health_keeps_a_query_after_the_path_and_refuses_a_bad_port(tmp_path: Path) -> None:
    # The query once went before /models (".../v1?api-version=x/models": a 404, exit 4).
    async with emulator() as (_, target):
        ok = await cli(["health"], cli_env(target.base_url + "?api-version=2024-10-21"), tmp_path)
    bad_port = await cli(["health"], cli_env("http://127.0.0.1:99999/v1"), tmp_path)
    assert ok[0] == 0, ok
    assert bad_port[0] == 2 and "bad port" in bad_port[2]


async def test_several_files_are_each_their_own_run(tmp_path: Path) -> None:
    """`runner run a.jsonl b.jsonl` runs both, each with its own results file."""
    a = _jobs(tmp_path, 3, "a.jsonl")
    b = _jobs(tmp_path, 4, "b.jsonl")
    async with emulator() as (_, target):
        code, stdout, stderr = await cli(
            ["run", str(a), str(b), "--db", str(tmp_path / "r.db")],
            cli_env(target.base_url),
            tmp_path,
        )
    assert code == 0, stderr
    assert len(read_results(tmp_path / "a.results.jsonl")) == 3
    assert len(read_results(tmp_path / "b.results.jsonl")) == 4
    assert stdout.count("results: ") == 2


async def test_max_runtime_is_kept_whatever_the_progress_interval(tmp_path: Path) -> None:
    """Regression: --max-runtime was checked on each 30 s progress tick (a 5 s cap ran 30 s)."""
    jobs = _jobs(tmp_path, 400)
    args = [
        "run",
        str(jobs),
        "--db",
        str(tmp_path / "r.db"),
        "--concurrency",
        "1",
        "--max-runtime",
        "2",
        "--progress",
        "plain",
        "--progress-interval",
        "30",
    ]
    async with emulator(latency_ms=20) as (_, target):
        started = anyio.current_time()
        code, stdout, _ = await cli(args, cli_env(target.base_url), tmp_path)
        elapsed = anyio.current_time() - started
    assert code == 3 and "--max-runtime 2s reached" in stdout
    assert elapsed < 10


async def test_a_glob_over_an_inbox_skips_the_results_files_beside_the_inputs(
    tmp_path: Path,
) -> None:
    """Regression: `runner run inbox/*.jsonl` took a.results.jsonl as a job file on re-run."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    a = _jobs(inbox, 2, "a.jsonl")
    async with emulator() as (_, target):
        env = cli_env(target.base_url)
        db = str(tmp_path / "r.db")
        assert (await cli(["run", str(a), "--db", db], env, tmp_path))[0] == 0
        results = inbox / "a.results.jsonl"
        code, _, stderr = await cli(["run", str(a), str(results), "--db", db], env, tmp_path)
    assert code == 0, stderr


async def test_retry_failed_names_the_command_that_resumes_a_run_with_its_own_out(
    tmp_path: Path,
) -> None:
    """Regression: the printed command lacked --out and started a new run instead."""
    jobs = write_jsonl(tmp_path / "in.jsonl", [batch_line("x", chat_body("y", model="missing-m"))])
    out = tmp_path / "custom.jsonl"
    db = str(tmp_path / "r.db")
    async with emulator() as (_, target):
        env = cli_env(target.base_url)
        await cli(["run", str(jobs), "--db", db, "--out", str(out)], env, tmp_path)
        code, stdout, _ = await cli(["retry-failed", "--db", db], env, tmp_path)
    assert code == 0
    assert f"--out {out}" in stdout and f"--db {db}" in stdout
