"""Reading job files: JSONL lines in OpenAI Batch format or bare chat-completion bodies.

Parsing one line is a pure function; `iter_jobs` streams a file line by line so a file of any
size is read in constant memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from runner.tokens import estimate_request_tokens

CHAT_URL = "/v1/chat/completions"
DEFAULT_MAX_LINE_BYTES = 10 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Job:
    """One request to send, as read from its line."""

    line: int
    custom_id: str
    body: bytes
    metadata: bytes | None
    est_tokens: int
    model: str = ""


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for messages."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


class LineError(ValueError):
    """A line that cannot become a job; the message is the reason."""


def parse_line(raw: bytes, line: int) -> Job | None:
    """Turn one line into a Job; None for a blank line; LineError for a bad one."""
    text = raw.strip()
    if not text:
        return None
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        reason = str(exc.args[0])
        if "UTF-8" in reason:
            raise LineError(
                "not UTF-8 text (save the file as UTF-8, not UTF-16 or Latin-1)"
            ) from None
        raise LineError(f"not valid JSON ({reason})") from None
    if not isinstance(obj, dict):
        raise LineError(f"expected a JSON object, got {json_type(obj)}")
    if "body" in obj or "custom_id" in obj:
        return _batch_line(obj, line)
    return _job(obj, f"line-{line}", None, line, bare=True)


def _batch_line(obj: dict[str, object], line: int) -> Job:
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id.strip():
        raise LineError("custom_id must be a non-empty string")
    method = obj.get("method", "POST")
    if method != "POST":
        raise LineError(f"method must be POST, got {method!r}")
    url = obj.get("url", CHAT_URL)
    if not isinstance(url, str) or url.rstrip("/") not in (CHAT_URL, "/chat/completions"):
        raise LineError(f"url must be {CHAT_URL!r}, got {url!r}")
    body = obj.get("body")
    if not isinstance(body, dict):
        raise LineError("body must be a JSON object holding the chat-completion request")
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise LineError(f"metadata must be a JSON object when present, got {json_type(metadata)}")
    return _job(body, custom_id, metadata, line)


def _job(
    body: dict[str, object], custom_id: str, metadata: object, line: int, bare: bool = False
) -> Job:
    messages = body.get("messages")
    if messages is None or messages == []:
        raise LineError("body has no messages (a non-empty list is required)")
    if not isinstance(messages, list):
        raise LineError(f"messages must be a non-empty array, got {json_type(messages)}")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise LineError(f"messages[{index}] must be an object with a role")
    model = body.get("model")
    if model is None:
        raise LineError("body has no model (a string is required)")
    if not isinstance(model, str) or not model.strip():
        raise LineError(f"model must be a non-empty string, got {json_type(model)}")
    if bare and "metadata" in body:
        # A bare body's metadata is ours to carry, not the provider's to receive.
        metadata = body.pop("metadata")
        if not isinstance(metadata, dict):
            raise LineError("metadata must be a JSON object when present")
    try:
        encoded = orjson.dumps(body)
    except TypeError as exc:  # orjson's own limits, e.g. nesting deeper than 254 levels
        raise LineError(f"body cannot be sent as JSON ({exc})") from None
    return Job(
        line=line,
        custom_id=custom_id,
        body=encoded,
        metadata=orjson.dumps(metadata) if metadata is not None else None,
        est_tokens=estimate_request_tokens(body),
        model=str(body["model"]),
    )


@dataclass
class FileDigest:
    """A running fingerprint of the bytes read, to recognise the same input on resume."""

    hasher: hashlib._Hash
    size: int = 0

    def update(self, data: bytes) -> None:
        """Account for more bytes of the file."""
        self.hasher.update(data)
        self.size += len(data)

    def hexdigest(self) -> str:
        """Size and hash in one string."""
        return f"{self.size}:{self.hasher.hexdigest()}"


def iter_lines(
    path: Path, digest: FileDigest, max_line_bytes: int
) -> Iterator[tuple[int, bytes | None]]:
    """Yield (line number, raw bytes), or None for a line over the size limit, never loading it."""
    with path.open("rb", buffering=1024 * 1024) as fh:
        # The BOM goes before the first line is measured, so it never counts against the limit.
        head = fh.read(len(_BOM))
        if head == _BOM:
            digest.update(head)
        else:
            fh.seek(0)
        number = 0
        while raw := fh.readline(max_line_bytes + 1):
            number += 1
            digest.update(raw)
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):
                    raw = fh.readline(1024 * 1024)
                    digest.update(raw)
                yield number, None
                continue
            yield number, raw


def file_digest(path: Path) -> str:
    """Fingerprint a whole file the same way ingest does."""
    digest = new_digest()
    with path.open("rb") as fh:
        while chunk := fh.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def new_digest() -> FileDigest:
    """An empty fingerprint."""
    return FileDigest(hashlib.sha256())
