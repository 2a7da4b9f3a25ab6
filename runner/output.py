"""The results file: a projection of the database, appended as jobs finish, exactly once.

The writer remembers a watermark, the last exported sequence number and the byte offset where
that prefix of the file ends, and saves it with the next database commit, after flush and
fsync. On start the file is cut back to the saved offset and everything after the saved
sequence number is exported again, so a crash at any moment leaves no duplicate and no torn line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread
import orjson

from runner.store.protocol import ResultRow, Store

EXPORT_BATCH = 2000


def one_line_json(raw: bytes) -> bytes:
    """Valid JSON bytes with no line break (providers may pretty-print their bodies)."""
    if b"\n" in raw or b"\r" in raw:
        return orjson.dumps(orjson.loads(raw))
    return raw


def result_line(row: ResultRow) -> bytes:
    """One line of the OpenAI Batch output shape (plus metadata when the input had it)."""
    response = None
    if row.status_code is not None and row.response is not None:
        response = {
            "status_code": row.status_code,
            "request_id": row.request_id,
            "body": orjson.Fragment(one_line_json(row.response)),
        }
    error = None
    if row.state != "done":
        error = {"code": row.error_code or "failed", "message": row.error_message or ""}
    line: dict[str, object] = {
        "id": f"batch_req_{row.job_id}",
        "custom_id": row.custom_id,
        "response": response,
        "error": error,
    }
    if row.cached:
        line["cached"] = True
    if row.metadata is not None:
        line["metadata"] = orjson.Fragment(one_line_json(row.metadata))
    return orjson.dumps(line) + b"\n"


def _write_durably(fh: BinaryIO, data: bytes) -> int:
    fh.write(data)
    fh.flush()
    os.fsync(fh.fileno())
    return fh.tell()


class ResultsFile:
    """Appends result lines for one run and tracks the watermark."""

    def __init__(self, path: Path, store: Store, run_id: int) -> None:
        self.path = path
        self._store = store
        self._run_id = run_id
        self._fh: BinaryIO | None = None
        self.seq = 0
        self.offset = 0
        self.lines_written = 0

    def open(self, seq: int, offset: int) -> None:
        """Open the file and cut it back to the saved watermark (or rebuild it if it was lost)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("r+b" if self.path.exists() else "w+b")
        size = fh.seek(0, os.SEEK_END)
        if size < offset:
            # Someone shortened or replaced the file: rebuild it from the database.
            seq, offset = 0, 0
        fh.truncate(offset)
        fh.seek(offset)
        self._fh, self.seq, self.offset = fh, seq, offset

    async def export(self) -> tuple[int, int]:
        """Append every recorded result past the watermark; return the new watermark."""
        assert self._fh is not None
        while True:
            rows = await self._store.results_after(self._run_id, self.seq, EXPORT_BATCH)
            if not rows:
                return self.seq, self.offset
            data = b"".join(result_line(row) for row in rows)
            self.offset = await anyio.to_thread.run_sync(_write_durably, self._fh, data)
            self.seq = rows[-1].seq
            self.lines_written += len(rows)
            if len(rows) < EXPORT_BATCH:
                return self.seq, self.offset

    @property
    def is_open(self) -> bool:
        """Whether `open` succeeded and `close` has not been called."""
        return self._fh is not None

    def close(self) -> None:
        """Close the file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
