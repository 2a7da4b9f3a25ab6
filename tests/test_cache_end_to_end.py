"""The response cache as runs use it: hits cost nothing, only safe requests are cached."""

from __future__ import annotations

import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tests.support import batch_line, chat_body, emulator, read_results, run, write_jsonl

pytestmark = pytest.mark.anyio


def _deterministic(i: int, **extra: object) -> dict[str, object]:
    return batch_line(f"det-{i}", chat_body(f"question {i}", temperature=0, **extra))


async def test_second_run_with_new_output_sends_nothing_for_deterministic_jobs(
    tmp_path: Path,
) -> None:
    """Same file, new results path: deterministic jobs come from the cache, bodies identical."""
    lines = [_deterministic(i) for i in range(5)]
    lines.append(batch_line("creative", chat_body("a poem", temperature=0.9)))
    lines.append(
        batch_line("search", chat_body("news", temperature=0, tools=[{"type": "web_search"}]))
    )
    jobs = write_jsonl(tmp_path / "jobs.jsonl", lines)
    async with emulator() as (emu, target):
        first = await run(jobs, target, tmp_path, out=tmp_path / "one.jsonl")
        before = emu.stats.requests
        second = await run(jobs, target, tmp_path, out=tmp_path / "two.jsonl")
    assert before == 7
    assert emu.stats.requests - before == 2  # the creative and the web-search job, sent again
    assert second.stats.cache_hits == 5 and second.stats.cache_misses == 0
    assert second.stats.tokens_saved > 0
    one = {line["custom_id"]: line for line in read_results(tmp_path / "one.jsonl")}
    two = {line["custom_id"]: line for line in read_results(tmp_path / "two.jsonl")}
    for i in range(5):
        assert two[f"det-{i}"]["response"]["body"] == one[f"det-{i}"]["response"]["body"]
        assert two[f"det-{i}"]["cached"] is True
    assert "cached" not in two["creative"] and "cached" not in two["search"]
    assert first.stats.cache_hits == 0


async def test_a_changed_parameter_resends_only_that_row(tmp_path: Path) -> None:
    """Changing max_tokens on one row misses the cache for that row only."""
    jobs_a = write_jsonl(tmp_path / "a.jsonl", [_deterministic(i) for i in range(4)])
    changed = [_deterministic(i) for i in range(4)]
    changed[2] = _deterministic(2, max_tokens=7)
    jobs_b = write_jsonl(tmp_path / "b.jsonl", changed)
    async with emulator() as (emu, target):
        await run(jobs_a, target, tmp_path)
        report = await run(jobs_b, target, tmp_path)
    assert emu.stats.requests == 5
    assert report.stats.cache_hits == 3 and report.stats.cache_misses == 1


async def test_cache_off_and_expired_entries_send_again(tmp_path: Path) -> None:
    """--cache off sends everything; an entry past its TTL is not served."""
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [_deterministic(i) for i in range(3)])
    async with emulator() as (emu, target):
        await run(jobs, target, tmp_path, out=tmp_path / "1.jsonl", cache_ttl_s=1.0)
        await run(jobs, target, tmp_path, out=tmp_path / "2.jsonl", cache_mode="off")
        assert emu.stats.requests == 6
        await anyio.sleep(1.1)
        expired = await run(jobs, target, tmp_path, out=tmp_path / "3.jsonl")
    assert emu.stats.requests == 9
    assert expired.stats.cache_hits == 0


async def test_redis_cache_is_shared_between_databases(tmp_path: Path) -> None:
    """Two runs with different databases share answers through the real Redis server."""
    url = "redis://127.0.0.1:6379/15"
    marker = uuid.uuid4().hex  # a fresh prompt per test run, so earlier entries cannot answer
    lines = [batch_line(f"r{i}", chat_body(f"{marker} {i}", temperature=0)) for i in range(4)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", lines)
    async with emulator() as (emu, target):
        await run(jobs, target, tmp_path, db=str(tmp_path / "a.db"), cache_url=url)
        other = await run(
            jobs,
            target,
            tmp_path,
            db=str(tmp_path / "b.db"),
            cache_url=url,
            out=tmp_path / "b.jsonl",
        )
    assert emu.stats.requests == 4
    assert other.stats.cache_hits == 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Redis server of this test's own, so it can be stopped mid-run."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        subprocess.run(["sleep", "0.05"], check=True)
    yield f"redis://127.0.0.1:{port}/0", proc
    proc.kill()
    proc.wait()


async def test_redis_stopped_mid_run_does_not_fail_the_run(
    tmp_path: Path,
    private_redis: tuple[str, subprocess.Popen[bytes]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When the cache server goes away, one warning is logged and every job still finishes."""
    url, server = private_redis
    lines = [
        batch_line(f"j{i}", chat_body(f"[emulate delay_ms=60] q{i}", temperature=0))
        for i in range(60)
    ]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", lines)
    async with emulator() as (emu, target), anyio.create_task_group() as tg:

        async def stop_redis() -> None:
            await anyio.sleep(0.3)
            server.kill()

        tg.start_soon(stop_redis)
        report = await run(jobs, target, tmp_path, cache_url=url, concurrency=4)
    assert report.counts == {"done": 60}
    assert emu.stats.requests == 60
    warnings = [r for r in caplog.records if r.name == "runner.cache"]
    assert len(warnings) == 1
