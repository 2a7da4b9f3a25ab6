"""assemble_stream: SSE chunks back into one chat.completion body."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from runner.sse import IncompleteStream, assemble_stream

HEAD = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1700000000, "model": "m"}


def chunk(*choices: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**HEAD, "choices": list(choices), **extra}


def delta(index: int = 0, finish: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"index": index, "delta": fields, "finish_reason": finish}


def stream(*events: dict[str, Any], done: bool = True, sep: bytes = b"\n\n") -> bytes:
    lines = [b"data: " + orjson.dumps(event) for event in events]
    if done:
        lines.append(b"data: [DONE]")
    return sep.join(lines) + sep


def assemble(raw: bytes) -> dict[str, Any]:
    result = orjson.loads(assemble_stream(raw))
    assert isinstance(result, dict)
    return result


def test_deltas_merge_into_one_message_with_finish_reason() -> None:
    raw = stream(
        chunk(delta(role="assistant", content="")),
        chunk(delta(content="Hel")),
        chunk(delta(content="lo")),
        chunk(delta(finish="stop")),
    )
    assert assemble(raw) == {
        "id": "chatcmpl-9",
        "created": 1700000000,
        "model": "m",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "finish_reason": "stop",
            }
        ],
    }


def test_finish_reason_stays_null_until_a_chunk_sets_it() -> None:
    raw = stream(chunk(delta(role="assistant", content="partial")))
    assert assemble(raw)["choices"][0]["finish_reason"] is None


def test_role_from_a_delta_replaces_the_default() -> None:
    raw = stream(chunk(delta(role="tool", content="x"), {"index": 1, "delta": {"content": "y"}}))
    roles = [choice["message"]["role"] for choice in assemble(raw)["choices"]]
    assert roles == ["tool", "assistant"]


def test_null_content_delta_does_not_erase_text() -> None:
    raw = stream(chunk(delta(content="kept")), chunk(delta(content=None, finish="length")))
    choice = assemble(raw)["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == ("kept", "length")


def test_usage_chunk_with_empty_choices_is_kept() -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    raw = stream(
        chunk(delta(role="assistant", content="ok"), usage=None),
        chunk(delta(finish="stop"), usage=None),
        chunk(usage=usage),
    )
    result = assemble(raw)
    assert result["usage"] == usage
    assert result["choices"][0]["message"]["content"] == "ok"


def test_several_choices_are_assembled_by_index_in_order() -> None:
    raw = stream(
        chunk(delta(1, role="assistant", content="B"), delta(0, role="assistant", content="A")),
        chunk(delta(1, content="b")),
        chunk(delta(0, content="a", finish="stop")),
        chunk(delta(2, content="C", finish="length")),
        chunk(delta(1, finish="stop")),
    )
    choices = assemble(raw)["choices"]
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in choices] == [
        (0, "Aa", "stop"),
        (1, "Bb", "stop"),
        (2, "C", "length"),
    ]


def test_tool_call_deltas_are_collected() -> None:
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f"}}
    raw = stream(chunk(delta(tool_calls=[call])), chunk(delta(finish="tool_calls")))
    assert assemble(raw)["choices"][0]["message"]["tool_calls"] == [call]


@pytest.mark.parametrize(
    "sep",
    [pytest.param(b"\n\n", id="lf"), pytest.param(b"\r\n\r\n", id="crlf")],
)
def test_comments_and_other_fields_are_ignored(sep: bytes) -> None:
    body = stream(chunk(delta(content="hi")), sep=sep)
    raw = b": keep-alive" + sep + b"event: message" + sep + b"id: 3" + sep + body
    assert assemble(raw)["choices"][0]["message"]["content"] == "hi"


def test_data_without_a_space_after_the_colon_is_read() -> None:
    raw = b"data:" + orjson.dumps(chunk(delta(content="tight"))) + b"\n\ndata:[DONE]\n\n"
    assert assemble(raw)["choices"][0]["message"]["content"] == "tight"


def test_chunks_after_done_are_ignored() -> None:
    raw = stream(chunk(delta(content="a"))) + stream(chunk(delta(content="zzz")), done=False)
    assert assemble(raw)["choices"][0]["message"]["content"] == "a"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(stream(chunk(delta(content="cut")), done=False), id="no-done"),
        pytest.param(b"", id="empty"),
        pytest.param(b": keep-alive\n\n", id="only-comments"),
        pytest.param(b"data: [DONE]\n\n", id="done-without-chunks"),
    ],
)
def test_stream_without_done_or_chunks_is_incomplete(raw: bytes) -> None:
    with pytest.raises(IncompleteStream):
        assemble_stream(raw)


def test_error_event_is_returned_as_the_error_body() -> None:
    error = {"error": {"message": "overloaded", "type": "server_error", "code": "overloaded"}}
    raw = stream(chunk(delta(content="par")), error, done=False)
    assert orjson.loads(assemble_stream(raw)) == error
