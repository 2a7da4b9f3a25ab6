"""Parsing a job file here or in a second process gives the same batches, problems and digest."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

from runner import parsing
from runner.jobfile import Job, file_digest
from tests.support import batch_line, chat_body, write_jsonl

pytestmark = pytest.mark.anyio

LIMIT = 4096


def mixed_file(path: Path) -> Path:
    lines: list[dict[str, object] | str] = [
        batch_line("a", chat_body("one")),
        "",
        "{not json",
        batch_line("b", chat_body("two"), metadata={"k": 1}),
        chat_body("a bare body"),
        batch_line("c", chat_body("x" * (LIMIT + 10))),
        '"a string"',
        batch_line("d", chat_body("ሰላም")),
    ]
    path = write_jsonl(path, lines)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # a BOM, as some editors write
    return path


async def collect(path: Path) -> tuple[list[Job], list[tuple[int, str]], str]:
    jobs: list[Job] = []
    problems: list[tuple[int, str]] = []
    digest: list[str] = []
    async for batch, bad in parsing.batches(path, LIMIT, digest):
        jobs += batch
        problems += bad
    return jobs, problems, digest[0]


@pytest.fixture(params=["here", "second process"])
def where(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "second process":
        monkeypatch.setattr(parsing, "SECOND_PROCESS_MIN_BYTES", 0)
    return str(request.param)


async def test_both_ways_give_the_same_jobs_problems_and_digest(tmp_path: Path, where: str) -> None:
    path = mixed_file(tmp_path / "mixed.jsonl")
    jobs, problems, digest = await collect(path)
    assert [(j.line, j.custom_id) for j in jobs] == [(1, "a"), (4, "b"), (5, "line-5"), (8, "d")]
    assert jobs[1].metadata == b'{"k":1}'
    assert orjson.loads(jobs[3].body)["messages"][0]["content"] == "ሰላም"
    assert [n for n, _ in problems] == [3, 6, 7]
    assert "not valid JSON" in problems[0][1]
    assert "longer than the 4096-byte limit" in problems[1][1]
    # Resume recognises the input by this digest, computed over the whole file.
    assert digest == file_digest(path)


async def test_a_file_of_bad_lines_arrives_in_bounded_batches(tmp_path: Path, where: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"[]\n" * (parsing.BATCH_LINES * 2 + 5))
    sizes = []
    async for jobs, problems in parsing.batches(path, LIMIT, []):
        assert jobs == []
        sizes.append(len(problems))
    assert sizes == [parsing.BATCH_LINES, parsing.BATCH_LINES, 5]


async def test_an_unreadable_input_is_a_usage_error(tmp_path: Path, where: str) -> None:
    with pytest.raises(parsing.InputUnreadable, match=r"cannot read .*: Is a directory"):
        await collect(tmp_path)


async def test_a_parser_that_dies_is_reported_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parsing, "SECOND_PROCESS_MIN_BYTES", 0)
    monkeypatch.setattr(
        parsing, "parser_command", lambda *_: [sys.executable, "-c", "import os; os._exit(9)"]
    )
    path = mixed_file(tmp_path / "mixed.jsonl")
    with pytest.raises(parsing.InputUnreadable, match="ended without finishing"):
        await collect(path)


async def test_big_lines_make_smaller_batches(
    tmp_path: Path, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 2,000 lines of 500 KB made one 1 GB batch; batches are now bounded in bytes too.
    monkeypatch.setattr(parsing, "BATCH_BYTES", 10_000)
    lines = [batch_line(f"c{i}", chat_body("x" * 3000)) for i in range(10)]
    path = write_jsonl(tmp_path / "big.jsonl", lines)
    sizes = [len(jobs) async for jobs, _ in parsing.batches(path, 2**20, [])]
    assert sum(sizes) == 10
    assert max(sizes) <= 4
