"""Regressions from attacking the CLI with bad input: each keeps the exact input that broke it."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import anyio
import pytest
from aiohttp import web

from runner.clock import FakeClock
from runner.limits import AdaptiveLimiter, LimitConfig
from runner.ownership import owner_is_gone
from runner.ratelimit_headers import RateLimitInfo
from runner.store.connect import open_store
from tests.support import (
    RUNNER_CMD,
    batch_line,
    chat_body,
    cli,
    cli_env,
    emulator,
    numbered_jobs,
    read_results,
    write_jsonl,
)

pytestmark = pytest.mark.anyio


def _jobs(tmp_path: Path, count: int) -> Path:
    return numbered_jobs(tmp_path / "in.jsonl", count)


async def test_restart_while_another_process_works_the_run_exits_6(tmp_path: Path) -> None:
    """`--restart` during a live run used to delete it under the owner: 31 duplicate lines."""
    jobs = _jobs(tmp_path, 200)
    args = ["run", str(jobs), "--db", str(tmp_path / "r.db"), "--concurrency", "2"]
    async with emulator(latency_ms=20) as (emu, target):
        env = cli_env(target.base_url)
        async with await anyio.open_process([*RUNNER_CMD, *args], env=env, cwd=tmp_path) as first:
            await anyio.sleep(1.5)
            code, _, stderr = await cli([*args, "--restart"], env, tmp_path)
            assert code == 6, stderr
            assert await first.wait() == 0
    ids = [line["custom_id"] for line in read_results(tmp_path / "in.results.jsonl")]
    assert len(ids) == len(set(ids)) == 200
    assert emu.stats.requests == 200


async def test_out_naming_the_database_is_refused_and_the_database_survives(
    tmp_path: Path,
) -> None:
    """`--out t.db --restart` used to overwrite the database with result lines."""
    jobs = _jobs(tmp_path, 3)
    db = tmp_path / "t.db"
    async with emulator() as (_, target):
        env = cli_env(target.base_url)
        assert (await cli(["run", str(jobs), "--db", str(db)], env, tmp_path))[0] == 0
        code, _, stderr = await cli(
            ["run", str(jobs), "--db", str(db), "--out", str(db), "--restart"], env, tmp_path
        )
        assert code == 2 and "must not be the database" in stderr
        code, stdout, _ = await cli(["runs", "--db", str(db)], env, tmp_path)
    assert code == 0 and "3 done" in stdout


@pytest.mark.parametrize(
    ("owner", "heartbeat_age_s", "gone"),
    [
        (f"{socket.gethostname()}:1:x", 10**9, True),  # pid alive (init), heartbeat from 1970
        (f"{socket.gethostname()}:{__import__('os').getpid()}:x", 1.0, True),  # our own pid
        (f"{socket.gethostname()}:1:x", 1.0, False),  # live pid, fresh heartbeat
        ("other-host:123:x", 1.0, False),
        ("other-host:123:x", 3600.0, True),
    ],
    ids=["alive-pid-stale-heartbeat", "own-pid", "alive-fresh", "remote-fresh", "remote-stale"],
)
def test_owner_liveness(owner: str, heartbeat_age_s: float, gone: bool) -> None:
    """A stale heartbeat frees a run even when some process has the recorded pid now."""
    now = 2_000_000_000.0
    assert owner_is_gone(owner, now - heartbeat_age_s, now) is gone


async def test_a_provider_echoing_the_key_never_gets_it_stored(tmp_path: Path) -> None:
    """Response bodies that repeat the key are scrubbed before the database and the file."""
    secret = "MYSECRETKEY12345"

    async def echo(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        body = await request.json()
        if "bad" in body["messages"][0]["content"]:
            error = {"error": {"message": f"Incorrect API key provided: {auth}", "code": "x"}}
            return web.json_response(error, status=400)
        choice = {"index": 0, "message": {"role": "assistant", "content": auth}}
        return web.json_response({"id": "c1", "choices": [choice]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        jobs = write_jsonl(
            tmp_path / "in.jsonl",
            [batch_line("ok", chat_body("fine")), batch_line("bad", chat_body("bad one"))],
        )
        env = cli_env(f"http://127.0.0.1:{port}/v1", secret)
        code, stdout, stderr = await cli(["run", str(jobs), "--db", "r.db"], env, tmp_path)
    finally:
        await runner.cleanup()
    assert code == 1, stderr
    lines = read_results(tmp_path / "in.results.jsonl")
    assert len(lines) == 2
    for path in [p for p in tmp_path.rglob("*") if p.is_file()]:
        assert secret.encode() not in path.read_bytes(), path
    assert secret not in stdout + stderr


async def test_unreachable_api_stops_with_exit_3_instead_of_failing_every_job(
    tmp_path: Path,
) -> None:
    """A closed port used to mark every job failed for good (exit 1, nothing to resume)."""
    jobs = _jobs(tmp_path, 50)
    code, stdout, stderr = await cli(
        ["run", str(jobs), "--db", "r.db"], cli_env("http://127.0.0.1:9/v1"), tmp_path
    )
    assert code == 3, stderr
    assert "no answer from the API" in stdout
    assert "50 pending" in stdout or "waiting to retry" in stdout
    assert "0 failed" in stdout.splitlines()[1]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("127.0.0.1:18808/v1", "not an http(s) URL"),
        ("ftp://example.invalid/v1", "not an http(s) URL"),
        ("not a url", "not an http(s) URL"),
        ("http://[::1", "not a valid URL"),
        # These four ended in exit 70 (internal error) once the client built requests itself.
        ("http://127.0.0.1:99999/v1", "bad port"),
        ("http://127.0.0.1:abc/v1", "bad port"),
        ("http://127.0.0.1:18808/v1/ключ", "non-ASCII"),
        ("http://пример.рф:18808/v1", "non-ASCII"),
        ("http://127.0.0.1:0/v1", "port 0"),
        ("http://127.0.0.1:18808/v 1", "spaces"),
        ("http://user:secret@127.0.0.1:18808/v1", "user name or password"),
    ],
)
async def test_unusable_base_url_is_refused_before_anything_is_queued(
    tmp_path: Path, url: str, reason: str
) -> None:
    """Bad SELAM_BASE_URL values: exit 2 naming the variable and the reason."""
    jobs = _jobs(tmp_path, 2)
    code, _, stderr = await cli(["run", str(jobs), "--db", "r.db"], cli_env(url), tmp_path)
    assert code == 2 and "SELAM_BASE_URL" in stderr and reason in stderr, stderr
    assert not (tmp_path / "in.results.jsonl").exists()


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"model": "m", "messages": ["hi", 1]}', "messages[0] must be an object with a role"),
        ('{"model": "", "messages": [{"role": "user", "content": "x"}]}', "model must be"),
        ('{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "got a number"),
        ('{"custom_id": "   ", "body": {"model": "m", "messages": []}}', "custom_id must be"),
        (
            '{"model": "m", "messages": [{"role": "user", "content": "x"}], "x": '
            + "[" * 300
            + "]" * 300
            + "}",
            "cannot be sent as JSON",
        ),
        ("\ufeff".encode("utf-16").decode("latin-1"), "not UTF-8 text"),
    ],
    ids=[
        "message-not-object",
        "empty-model",
        "numeric-model",
        "blank-custom-id",
        "nested-300-deep",
        "utf-16",
    ],
)
async def test_lines_the_provider_would_refuse_are_reported_before_sending(
    tmp_path: Path, line: str, reason: str
) -> None:
    """Each of these used to be sent (or crash with exit 70); now: exit 2 with the line."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(line.encode("latin-1" if "utf-16" in reason or "UTF" in reason else "utf-8"))
    async with emulator() as (emu, target):
        code, _, stderr = await cli(
            ["run", str(path), "--db", "r.db"], cli_env(target.base_url), tmp_path
        )
    assert code == 2, stderr
    assert f"{path}:1: " in stderr and reason in stderr
    assert emu.stats.requests == 0


async def test_huge_max_tokens_is_queued_not_an_internal_error(tmp_path: Path) -> None:
    """max_tokens 2**63-1 used to overflow SQLite (exit 70); now it runs."""
    body = chat_body("x", max_tokens=9223372036854775807)
    jobs = write_jsonl(tmp_path / "in.jsonl", [json.dumps({"custom_id": "a", "body": body})])
    async with emulator() as (_, target):
        code, _, stderr = await cli(
            ["run", str(jobs), "--db", "r.db"], cli_env(target.base_url), tmp_path
        )
    assert code == 0, stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--out", "/dev/null/x.jsonl"], "cannot write the results file"),
        (["--db", "sqlite:///:memory:"], "--db must name a file"),
        (["--db", "ftp://x"], "is not usable"),
        (["--timeout", "nan"], "not a finite number"),
    ],
    ids=["results-unwritable", "memory-db", "unknown-db-scheme", "nan-timeout"],
)
async def test_unusable_settings_get_a_message_not_an_internal_error(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    """Each of these used to end in exit 70 with a Python exception name."""
    jobs = _jobs(tmp_path, 1)
    code, _, stderr = await cli(["run", str(jobs), "--mock", *extra], cli_env("x"), tmp_path)
    assert code == 2, stderr
    assert message in stderr and "internal error" not in stderr


async def test_a_pipe_as_input_is_refused_with_a_reason(tmp_path: Path) -> None:
    """`runner run /dev/stdin` used to crash with FileNotFoundError."""
    result = await anyio.run_process(
        [*RUNNER_CMD, "run", "/dev/stdin", "--mock"],
        input=b"{}\n",
        env=cli_env("x"),
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert "not a regular file" in result.stderr.decode()


async def test_mock_server_on_a_busy_port_says_so(tmp_path: Path) -> None:
    """A port in use used to print 'listening' and then exit 70."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, stdout, stderr = await cli(
            ["mock-server", "--port", str(port)], cli_env("x"), tmp_path
        )
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in stderr
    assert "listening" not in stdout


async def test_own_rpm_ceiling_is_never_mistaken_for_a_quota() -> None:
    """`--rpm 60 --max-wait 1` used to stop (exit 3) after one request."""
    clock = FakeClock()
    limiter = AdaptiveLimiter(LimitConfig(rpm=60, max_wait_s=1.0), clock)
    for _ in range(80):
        limiter.settle(await limiter.acquire(10), RateLimitInfo(), 20)
    assert clock.now - 1_000.0 > 60  # paced by the ceiling, and never stopped


async def test_status_shows_a_dead_owner_as_interrupted(tmp_path: Path) -> None:
    """A crashed run used to show 'running (owner host:pid)' forever."""
    db = str(tmp_path / "r.db")
    async with open_store(db) as store:
        run_id = await store.create_run("/x.results.jsonl", "/x.jsonl", "d", 0.0, "h:1:x")
    code, stdout, _ = await cli(["status", str(run_id), "--db", db], cli_env("x"), tmp_path)
    assert code == 0 and "interrupted (its process is gone" in stdout
