"""The main job end to end against the emulator: formats, retries, failures, resume."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from runner.app import exit_code
from runner.errors import InputChangedError, InputError
from tests.support import batch_line, chat_body, emulator, read_results, run

pytestmark = pytest.mark.anyio


async def test_batch_and_bare_lines_both_run_with_ids_and_metadata(
    tmp_path: Path, write_jobs: Callable[..., Path]
) -> None:
    """Batch lines and bare bodies in one file: one result line each, ids and metadata kept."""
    same = chat_body("identical body")
    jobs = write_jobs(
        [
            batch_line("a", same, metadata={"row": 1, "tags": ["x"]}),
            batch_line("b", same),
            chat_body("a bare body"),
            {**chat_body("bare with metadata"), "metadata": {"row": 4}},
        ]
    )
    async with emulator() as (emu, target):
        report = await run(jobs, target, tmp_path)
    assert exit_code(report) == 0
    lines = read_results(jobs.with_name("jobs.results.jsonl"))
    by_id = {line["custom_id"]: line for line in lines}
    assert sorted(by_id) == ["a", "b", "line-3", "line-4"]
    assert by_id["a"]["metadata"] == {"row": 1, "tags": ["x"]}
    assert "metadata" not in by_id["b"]
    assert by_id["line-4"]["metadata"] == {"row": 4}
    assert by_id["a"]["response"]["body"]["choices"] == by_id["b"]["response"]["body"]["choices"]
    assert all(line["error"] is None and line["response"]["status_code"] == 200 for line in lines)
    assert emu.stats.requests == 4


async def test_400_is_sent_once_and_500_then_200_succeeds(
    tmp_path: Path, write_jobs: Callable[..., Path]
) -> None:
    """A 400 fails the job after one request; a 500 is retried and the job succeeds."""
    jobs = write_jobs(
        [
            batch_line("bad", chat_body("[emulate status=400] nope")),
            batch_line("flaky", chat_body("[emulate status=500,200] try twice")),
            batch_line("fine", chat_body("plain")),
        ]
    )
    async with emulator() as (emu, target):
        report = await run(jobs, target, tmp_path)
    assert exit_code(report) == 1
    by_id = {line["custom_id"]: line for line in read_results(Path(report.run.out_path))}
    assert by_id["bad"]["error"]["code"] == "invalid_request"
    assert by_id["bad"]["response"]["status_code"] == 400
    assert by_id["flaky"]["error"] is None
    assert by_id["flaky"]["response"]["status_code"] == 200
    assert emu.stats.by_status == {400: 1, 500: 1, 200: 2}
    assert report.counts == {"done": 2, "failed": 1}


async def test_server_errors_exhaust_retries_into_one_failed_line(
    tmp_path: Path, write_jobs: Callable[..., Path]
) -> None:
    """A job that only ever gets 503 fails after max_retries + 1 attempts, with one line."""
    jobs = write_jobs([batch_line("down", chat_body("[emulate status=503 retry_after=0] x"))])
    async with emulator() as (emu, target):
        report = await run(jobs, target, tmp_path, max_retries=2)
    lines = read_results(Path(report.run.out_path))
    assert len(lines) == 1
    assert lines[0]["error"]["code"] == "service_unavailable"
    assert "gave up after 3 attempts" in lines[0]["error"]["message"]
    assert emu.stats.by_status == {503: 3}


async def test_rerun_sends_nothing_and_keeps_one_line_per_job(
    tmp_path: Path, write_jobs: Callable[..., Path]
) -> None:
    """Running the same command again after completion sends no request and adds no line."""
    jobs = write_jobs([batch_line(f"j{i}", chat_body(f"job {i}")) for i in range(20)])
    async with emulator() as (emu, target):
        first = await run(jobs, target, tmp_path)
        again = await run(jobs, target, tmp_path)
    assert first.stats.sent == 20
    assert again.resumed and again.stats.sent == 0
    assert emu.stats.requests == 20
    assert len(read_results(Path(first.run.out_path))) == 20


async def test_changed_input_under_same_results_path_is_refused_then_restartable(
    tmp_path: Path, write_jobs: Callable[..., Path]
) -> None:
    """A different input for the same results file is refused; --restart starts over."""
    jobs = write_jobs([batch_line("x", chat_body("one"))])
    async with emulator() as (_, target):
        await run(jobs, target, tmp_path)
        write_jobs([batch_line("x", chat_body("one")), batch_line("y", chat_body("two"))])
        with pytest.raises(InputChangedError, match="--restart"):
            await run(jobs, target, tmp_path)
        report = await run(jobs, target, tmp_path, restart=True)
    assert report.counts == {"done": 2}
    assert [line["custom_id"] for line in read_results(Path(report.run.out_path))] == ["x", "y"]


async def test_deleted_results_file_is_rebuilt_from_the_database(
    tmp_path: Path, write_jobs: Callable[..., Path]
) -> None:
    """The file is a projection: if it is lost, the next run writes it again without sending."""
    jobs = write_jobs([batch_line(f"j{i}", chat_body(f"job {i}")) for i in range(5)])
    async with emulator() as (emu, target):
        report = await run(jobs, target, tmp_path)
        Path(report.run.out_path).unlink()
        await run(jobs, target, tmp_path)
    assert emu.stats.requests == 5
    ids = Counter(line["custom_id"] for line in read_results(Path(report.run.out_path)))
    assert ids == Counter({f"j{i}": 1 for i in range(5)})


async def test_bom_crlf_and_blank_lines_run_fine(
    tmp_path: Path, write_jobs: Callable[..., Path]
) -> None:
    """A UTF-8 BOM, CRLF line ends and blank lines are accepted."""
    path = tmp_path / "windows.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"model": "selam-turbo", "messages": [{"role": "user", "content": "a"}]}\r\n'
        b"\r\n   \r\n"
        b'{"model": "selam-turbo", "messages": [{"role": "user", "content": "b"}]}\r\n'
    )
    async with emulator() as (_, target):
        report = await run(path, target, tmp_path)
    assert report.counts == {"done": 2}
    ids = [line["custom_id"] for line in read_results(Path(report.run.out_path))]
    assert sorted(ids) == ["line-1", "line-4"]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            ['{"model": "m", "messages": [{"role": "user", "content": "ok"}]}', "{not json"],
            r"jobs\.jsonl:2: not valid JSON",
        ),
        (['{"model": "m"}'], r"jobs\.jsonl:1: body has no messages"),
        (
            [batch_line("dup", chat_body("a")), batch_line("dup", chat_body("b"))],
            r"jobs\.jsonl:2: duplicate custom_id 'dup' \(first on line 1\)",
        ),
    ],
    ids=["malformed-json", "no-messages", "duplicate-custom-id"],
)
async def test_bad_input_names_file_and_line_and_sends_nothing(
    tmp_path: Path, write_jobs: Callable[..., Path], lines: list[object], expected: str
) -> None:
    """Bad lines are reported with file and line before anything is sent."""
    jobs = write_jobs(lines)
    async with emulator() as (emu, target):
        with pytest.raises(InputError, match=expected):
            await run(jobs, target, tmp_path)
    assert emu.stats.requests == 0
    assert not jobs.with_name("jobs.results.jsonl").exists()


async def test_duplicate_across_insert_batches_is_found(
    tmp_path: Path, write_jobs: Callable[..., Path]
) -> None:
    """A duplicate custom_id far apart in a big file (different insert batches) is reported."""
    lines = [batch_line(f"id-{i}", chat_body("x")) for i in range(4500)]
    lines.append(batch_line("id-7", chat_body("again")))
    jobs = write_jobs(lines)
    async with emulator() as (emu, target):
        with pytest.raises(
            InputError, match=r":4501: duplicate custom_id 'id-7' \(first on line 8\)"
        ):
            await run(jobs, target, tmp_path)
    assert emu.stats.requests == 0


async def test_rate_limited_run_loses_nothing_and_rarely_hits_429(
    tmp_path: Path, write_jobs: Callable[..., Path]
) -> None:
    """Under 30 requests per 3 s, 100 jobs all finish and under 5% of requests get a 429."""
    jobs = write_jobs([batch_line(f"j{i:03}", chat_body(f"job {i}")) for i in range(100)])
    async with emulator(limit_requests=30, window_s=3.0, latency_ms=5) as (emu, target):
        report = await run(jobs, target, tmp_path, concurrency=8)
    assert report.counts == {"done": 100}
    assert len(read_results(Path(report.run.out_path))) == 100
    assert emu.stats.rate_limited < 0.05 * emu.stats.requests
