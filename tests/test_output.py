"""Result lines in the OpenAI Batch output shape, and the results file cut back to its watermark."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

import runner.output
from runner.jobfile import Job, parse_line
from runner.output import ResultsFile, result_line
from runner.store.connect import open_store
from runner.store.protocol import ClaimedJob, Outcome, ResultRow
from runner.store.sql import SqlStore

OWNER = "test-owner"
NOW = 1_700_000_000.0
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
BAD_REQUEST = {
    "error": {
        "message": "messages is required",
        "type": "invalid_request_error",
        "code": "missing_parameter",
    }
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def row(**fields: Any) -> ResultRow:
    """A ResultRow for a finished job, overridden by `fields`."""
    base: dict[str, Any] = dict(
        seq=1,
        job_id=41,
        custom_id="req-1",
        state="done",
        status_code=200,
        request_id="req_abc",
        response=orjson.dumps(COMPLETION),
        error_code=None,
        error_message=None,
        metadata=None,
    )
    return ResultRow(**(base | fields))


def parsed(line: bytes) -> dict[str, Any]:
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1, "a result must be exactly one line"
    value = orjson.loads(line)
    assert isinstance(value, dict)
    return value


# --- result_line --------------------------------------------------------------------------


def test_done_line_has_the_batch_output_shape() -> None:
    assert parsed(result_line(row())) == {
        "id": "batch_req_41",
        "custom_id": "req-1",
        "response": {"status_code": 200, "request_id": "req_abc", "body": COMPLETION},
        "error": None,
    }


def test_failed_line_keeps_the_provider_status_and_body_beside_the_error() -> None:
    line = result_line(
        row(
            state="failed",
            status_code=400,
            request_id=None,
            response=orjson.dumps(BAD_REQUEST),
            error_code="missing_parameter",
            error_message="messages is required",
        )
    )
    assert parsed(line) == {
        "id": "batch_req_41",
        "custom_id": "req-1",
        "response": {"status_code": 400, "request_id": None, "body": BAD_REQUEST},
        "error": {"code": "missing_parameter", "message": "messages is required"},
    }


@pytest.mark.parametrize(
    ("status_code", "response"),
    [
        pytest.param(None, None, id="never-answered"),
        pytest.param(502, None, id="status-but-body-not-kept"),
    ],
)
def test_failed_line_without_a_response_has_response_null(
    status_code: int | None, response: bytes | None
) -> None:
    line = result_line(
        row(
            state="failed",
            status_code=status_code,
            response=response,
            error_code="exceeds_token_budget",
            error_message="request needs about 9000 tokens; it can never be sent",
        )
    )
    result = parsed(line)
    assert result["response"] is None
    assert result["error"] == {
        "code": "exceeds_token_budget",
        "message": "request needs about 9000 tokens; it can never be sent",
    }


def test_failed_line_without_code_or_message_says_failed() -> None:
    result = parsed(result_line(row(state="failed", response=None, status_code=None)))
    assert result["error"] == {"code": "failed", "message": ""}


def test_metadata_is_embedded_as_json_not_as_a_string() -> None:
    result = parsed(result_line(row(metadata=b'{"row":7,"tags":["a","b"]}')))
    assert result["metadata"] == {"row": 7, "tags": ["a", "b"]}


def test_no_metadata_key_without_metadata() -> None:
    assert "metadata" not in parsed(result_line(row()))


def test_pretty_printed_provider_body_still_makes_one_line() -> None:
    """Providers (OpenAI among them) indent their JSON; JSONL needs one line per result."""
    pretty = orjson.dumps(COMPLETION, option=orjson.OPT_INDENT_2) + b"\n"
    result = parsed(result_line(row(response=pretty)))
    assert result["response"]["body"] == COMPLETION


def test_unicode_in_the_body_survives() -> None:
    body = {**COMPLETION, "choices": [{"index": 0, "message": {"content": "ሰላም 👋"}}]}
    result = parsed(result_line(row(response=orjson.dumps(body))))
    assert result["response"]["body"]["choices"][0]["message"]["content"] == "ሰላም 👋"


# --- ResultsFile on a real SQLite store ---------------------------------------------------


def jobs(n: int) -> list[Job]:
    parsed_jobs = []
    for i in range(1, n + 1):
        raw = orjson.dumps(
            {
                "custom_id": f"c{i}",
                "body": {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]},
                "metadata": {"i": i},
            }
        )
        job = parse_line(raw, i)
        assert job is not None
        parsed_jobs.append(job)
    return parsed_jobs


def done(job: ClaimedJob) -> Outcome:
    body = {**COMPLETION, "id": f"chatcmpl-{job.custom_id}"}
    return Outcome(
        job.id, "done", 200, f"req_{job.custom_id}", orjson.dumps(body), None, None, 3, 1
    )


def failed(job: ClaimedJob) -> Outcome:
    return Outcome(
        job.id, "failed", 400, None, orjson.dumps(BAD_REQUEST), "missing_parameter", "bad"
    )


@asynccontextmanager
async def run_with_jobs(tmp_path: Path, n: int) -> AsyncIterator[tuple[SqlStore, int]]:
    async with open_store(str(tmp_path / "runner.db")) as store:
        out = str(tmp_path / "out.jsonl")
        run_id = await store.create_run(out, "jobs.jsonl", "d", NOW, OWNER)
        assert await store.add_jobs(run_id, jobs(n)) == []
        await store.mark_ingested(run_id, n, "d", NOW)
        yield store, run_id


async def finish(
    store: SqlStore, run_id: int, count: int, decide: Callable[[ClaimedJob], Outcome] = done
) -> list[ClaimedJob]:
    claimed = await store.claim(run_id, OWNER, count, NOW, 600.0)
    assert len(claimed) == count
    await store.record(run_id, OWNER, [decide(job) for job in claimed], NOW, None)
    return claimed


async def export(
    store: SqlStore, run_id: int, path: Path, seq: int, offset: int
) -> tuple[int, int]:
    results = ResultsFile(path, store, run_id)
    results.open(seq, offset)
    try:
        return await results.export()
    finally:
        results.close()


def custom_ids(path: Path) -> list[str]:
    return [orjson.loads(line)["custom_id"] for line in path.read_bytes().splitlines()]


@pytest.mark.anyio
async def test_export_writes_each_final_result_once_in_record_order(tmp_path: Path) -> None:
    out = tmp_path / "out" / "results.jsonl"
    async with run_with_jobs(tmp_path, 4) as (store, run_id):
        claimed = await finish(store, run_id, 2)
        await finish(store, run_id, 2, failed)
        seq, offset = await export(store, run_id, out, 0, 0)
    assert (seq, offset) == (4, out.stat().st_size)
    lines = [parsed(line + b"\n") for line in out.read_bytes().splitlines()]
    assert [line["custom_id"] for line in lines] == ["c1", "c2", "c3", "c4"]
    assert lines[0]["id"] == f"batch_req_{claimed[0].id}"
    assert lines[0]["metadata"] == {"i": 1}
    assert lines[0]["response"]["request_id"] == "req_c1"
    assert lines[2]["response"]["status_code"] == 400
    assert lines[2]["error"] == {"code": "missing_parameter", "message": "bad"}


@pytest.mark.anyio
async def test_export_appends_only_results_past_the_watermark(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    async with run_with_jobs(tmp_path, 3) as (store, run_id):
        await finish(store, run_id, 1)
        results = ResultsFile(out, store, run_id)
        results.open(0, 0)
        try:
            first = await results.export()
            await finish(store, run_id, 2)
            second = await results.export()
            again = await results.export()
        finally:
            results.close()
    assert first == (1, len(out.read_bytes().splitlines()[0]) + 1)
    assert second == again == (3, out.stat().st_size)
    assert results.lines_written == 3
    assert custom_ids(out) == ["c1", "c2", "c3"]


@pytest.mark.anyio
async def test_export_drains_more_than_one_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner.output, "EXPORT_BATCH", 2)
    out = tmp_path / "results.jsonl"
    async with run_with_jobs(tmp_path, 5) as (store, run_id):
        await finish(store, run_id, 5)
        assert await export(store, run_id, out, 0, 0) == (5, out.stat().st_size)
    assert custom_ids(out) == ["c1", "c2", "c3", "c4", "c5"]


@pytest.mark.anyio
async def test_open_cuts_a_torn_tail_back_to_the_saved_offset(tmp_path: Path) -> None:
    """A crash after writing but before saving the watermark leaves no duplicate or torn line."""
    out = tmp_path / "results.jsonl"
    async with run_with_jobs(tmp_path, 2) as (store, run_id):
        await finish(store, run_id, 2)
        seq, offset = await export(store, run_id, out, 0, 0)
        clean = out.read_bytes()
        with out.open("ab") as fh:
            fh.write(b'{"id":"batch_req_99","custom_id":"c2","resp')
        assert await export(store, run_id, out, seq, offset) == (seq, offset)
    assert out.read_bytes() == clean


@pytest.mark.anyio
async def test_open_at_an_older_watermark_rewrites_the_later_lines_once(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    async with run_with_jobs(tmp_path, 3) as (store, run_id):
        await finish(store, run_id, 1)
        saved = await export(store, run_id, out, 0, 0)
        await finish(store, run_id, 2)
        final = await export(store, run_id, out, *saved)
        full = out.read_bytes()
        # The process died after writing lines 2-3 but before saving their watermark.
        assert await export(store, run_id, out, *saved) == final
    assert out.read_bytes() == full
    assert custom_ids(out) == ["c1", "c2", "c3"]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda path: path.write_bytes(path.read_bytes()[:10]), id="file-shortened"),
        pytest.param(lambda path: path.write_bytes(b""), id="file-emptied"),
        pytest.param(lambda path: path.unlink(), id="file-deleted"),
    ],
)
@pytest.mark.anyio
async def test_open_rebuilds_a_file_shorter_than_the_saved_offset(
    tmp_path: Path, damage: Callable[[Path], object]
) -> None:
    out = tmp_path / "results.jsonl"
    async with run_with_jobs(tmp_path, 3) as (store, run_id):
        await finish(store, run_id, 3)
        seq, offset = await export(store, run_id, out, 0, 0)
        original = out.read_bytes()
        damage(out)
        assert await export(store, run_id, out, seq, offset) == (seq, offset)
    assert out.read_bytes() == original
    assert custom_ids(out) == ["c1", "c2", "c3"]


@pytest.mark.anyio
async def test_results_of_jobs_sent_back_for_retry_are_not_exported(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    async with run_with_jobs(tmp_path, 2) as (store, run_id):
        claimed = await store.claim(run_id, OWNER, 2, NOW, 600.0)
        retry = Outcome(claimed[1].id, "retry", 503, None, None, "http_503", "busy", retry_at=NOW)
        await store.record(run_id, OWNER, [done(claimed[0]), retry], NOW, None)
        assert await export(store, run_id, out, 0, 0) == (1, out.stat().st_size)
    assert custom_ids(out) == ["c1"]
