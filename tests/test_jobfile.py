"""Job files: parsing one line (Batch line or bare body) and streaming a file's lines."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from runner.jobfile import (
    Job,
    LineError,
    file_digest,
    iter_lines,
    new_digest,
    parse_line,
)
from runner.tokens import DEFAULT_COMPLETION_TOKENS, estimate_request_tokens

BOM = b"\xef\xbb\xbf"
MESSAGES = [{"role": "user", "content": "Hello there"}]
BODY = {"model": "selam-turbo", "messages": MESSAGES}


def line(obj: object) -> bytes:
    return orjson.dumps(obj) + b"\n"


def batch(**fields: object) -> dict[str, object]:
    """An OpenAI Batch line with the usual fields, overridden by `fields`."""
    base: dict[str, object] = {
        "custom_id": "req-1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": BODY,
    }
    return base | fields


def parse(obj: object, number: int = 1) -> Job:
    job = parse_line(line(obj), number)
    assert job is not None
    return job


def read_all(path: Path, max_line_bytes: int) -> list[tuple[int, bytes | None]]:
    return list(iter_lines(path, new_digest(), max_line_bytes))


# --- parse_line ---------------------------------------------------------------------------


def test_batch_line_becomes_a_job_with_its_custom_id_and_body() -> None:
    job = parse(batch(custom_id="alpha"), number=7)
    assert job.line == 7
    assert job.custom_id == "alpha"
    assert orjson.loads(job.body) == BODY
    assert job.metadata is None
    assert job.est_tokens == estimate_request_tokens(BODY)


def test_batch_line_carries_its_metadata_beside_the_body() -> None:
    job = parse(batch(metadata={"row": 12, "source": "sheet"}))
    assert job.metadata is not None
    assert orjson.loads(job.metadata) == {"row": 12, "source": "sheet"}
    assert orjson.loads(job.body) == BODY


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"method": None, "url": None}, id="method-and-url-omitted"),
        pytest.param({"url": "/chat/completions"}, id="url-without-v1"),
        pytest.param({"url": "/v1/chat/completions/"}, id="url-trailing-slash"),
    ],
)
def test_batch_line_accepts_optional_and_equivalent_fields(fields: dict[str, object]) -> None:
    obj = {k: v for k, v in (batch() | fields).items() if v is not None}
    assert parse(obj).custom_id == "req-1"


def test_batch_line_keeps_body_fields_it_does_not_know() -> None:
    body = BODY | {"temperature": 0.2, "tools": [{"type": "web_search"}]}
    assert orjson.loads(parse(batch(body=body)).body) == body


def test_batch_body_metadata_is_forwarded_even_when_custom_id_looks_like_line_n() -> None:
    """A Batch line's body goes to the provider untouched, whatever its custom_id looks like."""
    body = BODY | {"metadata": {"for": "provider"}}
    job = parse(batch(custom_id="line-1", body=body, metadata={"ours": 1}))
    assert orjson.loads(job.body) == body
    assert job.metadata is not None
    assert orjson.loads(job.metadata) == {"ours": 1}


def test_bare_body_gets_custom_id_line_n() -> None:
    job = parse(BODY, number=42)
    assert job.custom_id == "line-42"
    assert job.line == 42
    assert orjson.loads(job.body) == BODY
    assert job.metadata is None


def test_bare_body_metadata_is_taken_out_of_the_body() -> None:
    job = parse(BODY | {"metadata": {"row": 3}})
    assert orjson.loads(job.body) == BODY
    assert job.metadata is not None
    assert orjson.loads(job.metadata) == {"row": 3}


def test_token_estimate_counts_the_max_tokens_of_the_body() -> None:
    job = parse(BODY | {"max_tokens": 1000})
    assert job.est_tokens == estimate_request_tokens(BODY) - DEFAULT_COMPLETION_TOKENS + 1000


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\n", id="newline"),
        pytest.param(b"\r\n", id="crlf"),
        pytest.param(b"   \t  \n", id="spaces-and-tab"),
    ],
)
def test_blank_line_is_none(raw: bytes) -> None:
    assert parse_line(raw, 1) is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(b'{"model": ', "not valid JSON", id="not-json"),
        pytest.param(b"[1, 2]", "expected a JSON object, got an array", id="array"),
        pytest.param(b'"text"', "expected a JSON object, got a string", id="string"),
        pytest.param(line(batch(custom_id=None)), "custom_id must be", id="custom-id-null"),
        pytest.param(
            line({k: v for k, v in batch().items() if k != "custom_id"}),
            "custom_id must be",
            id="custom-id-missing",
        ),
        pytest.param(line(batch(custom_id="")), "custom_id must be", id="custom-id-empty"),
        pytest.param(line(batch(custom_id=7)), "custom_id must be", id="custom-id-number"),
        pytest.param(line(batch(method="GET")), "method must be POST", id="method-get"),
        pytest.param(line(batch(url="/v1/embeddings")), "url must be", id="url-embeddings"),
        pytest.param(line(batch(url=5)), "url must be", id="url-not-string"),
        pytest.param(line(batch(body="hi")), "body must be a JSON object", id="body-string"),
        pytest.param(line(batch(body=None)), "body must be a JSON object", id="body-null"),
        pytest.param(
            line(batch(body={"model": "m"})), "body has no messages", id="batch-no-messages"
        ),
        pytest.param(
            line(batch(body={"model": "m", "messages": []})),
            "body has no messages",
            id="batch-empty-messages",
        ),
        pytest.param(
            line(batch(body={"model": "m", "messages": "hi"})),
            "messages must be a non-empty array, got a string",
            id="messages-not-a-list",
        ),
        pytest.param(line({"model": "m"}), "body has no messages", id="bare-no-messages"),
        pytest.param(
            line({"model": "m", "messages": []}), "body has no messages", id="bare-empty-messages"
        ),
        pytest.param(line(batch(body={"messages": MESSAGES})), "body has no model", id="no-model"),
        pytest.param(
            line({"model": 3, "messages": MESSAGES}),
            "model must be a non-empty string, got a number",
            id="model-not-string",
        ),
        pytest.param(
            line(batch(metadata=["a"])), "metadata must be a JSON object", id="batch-metadata-list"
        ),
        pytest.param(
            line(BODY | {"metadata": "x"}),
            "metadata must be a JSON object",
            id="bare-metadata-string",
        ),
    ],
)
def test_bad_line_raises_line_error_naming_the_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(LineError) as caught:
        parse_line(raw, 3)
    assert reason in str(caught.value)


# --- iter_lines ---------------------------------------------------------------------------


def test_iter_lines_numbers_lines_from_one_and_keeps_blank_ones(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(b"a\n\nb\n")
    assert read_all(path, 100) == [(1, b"a\n"), (2, b"\n"), (3, b"b\n")]


def test_iter_lines_yields_a_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(b"a\nb")
    assert read_all(path, 100) == [(1, b"a\n"), (2, b"b")]


def test_iter_lines_drops_a_utf8_bom_from_the_first_line_only(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    first, second = line(batch(custom_id="a")), line(batch(custom_id="b"))
    path.write_bytes(BOM + first + BOM + second)
    lines = read_all(path, 1000)
    assert lines == [(1, first), (2, BOM + second)]
    job = parse_line(first, 1)
    assert job is not None
    assert job.custom_id == "a"


def test_iter_lines_reads_a_bom_first_line_at_the_size_limit_whole(tmp_path: Path) -> None:
    """The BOM does not count against max_line_bytes and never splits the first line."""
    content = b'{"a": 1234}'  # 11 bytes
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(BOM + content + b"\n" + b"{}\n")
    assert read_all(path, len(content)) == [(1, content + b"\n"), (2, b"{}\n")]


def test_iter_lines_reports_an_oversized_bom_first_line_as_none(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(BOM + b"x" * 40 + b"\n" + b"{}\n")
    assert read_all(path, 11) == [(1, None), (2, b"{}\n")]


def test_iter_lines_crlf_lines_parse_as_jobs(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    first = orjson.dumps(batch(custom_id="a")) + b"\r\n"
    second = orjson.dumps(BODY) + b"\r\n"
    path.write_bytes(first + b"\r\n" + second)
    lines = read_all(path, 1000)
    assert [number for number, _ in lines] == [1, 2, 3]
    jobs = [parse_line(raw, number) for number, raw in lines if raw is not None]
    assert [job.custom_id if job else None for job in jobs] == ["a", None, "line-3"]


def test_iter_lines_yields_none_for_an_oversized_line_and_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    big = b"y" * 5000 + b"\n"
    path.write_bytes(b"first\n" + big + b"third\n" + big + b"fifth\n")
    assert read_all(path, 100) == [
        (1, b"first\n"),
        (2, None),
        (3, b"third\n"),
        (4, None),
        (5, b"fifth\n"),
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(b"x" * 10, b"x" * 10 + b"\n", id="exactly-at-limit"),
        pytest.param(b"x" * 11, None, id="one-byte-over"),
    ],
)
def test_iter_lines_limit_boundary(tmp_path: Path, content: bytes, expected: bytes | None) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(content + b"\n" + b"next\n")
    assert read_all(path, 10) == [(1, expected), (2, b"next\n")]


def test_iter_lines_oversized_last_line_without_newline_is_none(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(b"ok\n" + b"z" * 300)
    assert read_all(path, 100) == [(1, b"ok\n"), (2, None)]


def test_iter_lines_digest_equals_file_digest(tmp_path: Path) -> None:
    """Every byte counts, the BOM and skipped oversized lines included."""
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(BOM + b"first\r\n" + b"q" * 700 + b"\n\nlast")
    digest = new_digest()
    list(iter_lines(path, digest, 64))
    assert digest.size == path.stat().st_size
    assert digest.hexdigest() == file_digest(path)
    assert file_digest(path).startswith(f"{path.stat().st_size}:")


def test_file_digest_differs_when_one_byte_differs(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_bytes(b'{"x": 1}\n')
    b.write_bytes(b'{"x": 2}\n')
    assert file_digest(a) != file_digest(b)
