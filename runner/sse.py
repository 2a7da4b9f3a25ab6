"""Turning a streamed (SSE) chat completion back into one completion object."""

from __future__ import annotations

from typing import Any

import orjson


class IncompleteStream(ValueError):
    """The stream ended before `data: [DONE]` or held no usable chunk."""


def _merge_choice(slot: dict[str, Any], delta_choice: dict[str, Any]) -> None:
    delta = delta_choice.get("delta") or {}
    message = slot["message"]
    for key, value in delta.items():
        if key == "content" and isinstance(value, str):
            message["content"] = (message.get("content") or "") + value
        elif key == "role" and value:
            message["role"] = value
        elif key == "tool_calls" and isinstance(value, list):
            message.setdefault("tool_calls", []).extend(value)
        elif value is not None:
            message.setdefault(key, value)
    if delta_choice.get("finish_reason") is not None:
        slot["finish_reason"] = delta_choice["finish_reason"]


def assemble_stream(raw: bytes) -> bytes:
    """Rebuild a `chat.completion` JSON body from the bytes of an SSE response."""
    completion: dict[str, Any] | None = None
    choices: dict[int, dict[str, Any]] = {}
    done = False
    for line in raw.splitlines():
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            done = True
            break
        try:
            chunk = orjson.loads(data)
            if not isinstance(chunk, dict):
                raise TypeError(f"an event is {type(chunk).__name__}, not an object")
            if "error" in chunk:
                return orjson.dumps(chunk)
            if completion is None:
                completion = {k: chunk.get(k) for k in ("id", "created", "model")}
                completion["object"] = "chat.completion"
            if chunk.get("usage"):
                completion["usage"] = chunk["usage"]
            for delta_choice in chunk.get("choices") or []:
                index = int(delta_choice.get("index", 0))
                slot = choices.setdefault(
                    index, {"index": index, "message": {"role": "assistant"}, "finish_reason": None}
                )
                _merge_choice(slot, delta_choice)
        except (ValueError, TypeError, AttributeError) as exc:
            # Not the shape of a chat-completion chunk: the stream holds no usable answer.
            raise IncompleteStream(f"malformed stream event ({exc})") from None
    if not done or completion is None:
        raise IncompleteStream("the stream ended without data: [DONE]")
    completion["choices"] = [choices[i] for i in sorted(choices)]
    return orjson.dumps(completion)
