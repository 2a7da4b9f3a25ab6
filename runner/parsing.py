"""Reading and parsing a job file into batches, here or in a second process.

Parsing (about 4.5 us a line) and inserting (about 6 us a row) both need the interpreter, so in
one process they take turns. A big file is parsed by `python -m runner.parsing` on another core
while this process inserts; a small one is parsed here, since starting the parser costs about
0.1 s. Both produce the same batches, problems and digest.

The parser speaks length-prefixed pickle frames on its stdout: ("batch", jobs, problems) and a
last ("end", digest) or ("error", message). Only our own child writes that pipe.
"""

from __future__ import annotations

import pickle
import signal
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import anyio.lowlevel
from anyio.streams.buffered import BufferedByteReceiveStream

from runner.errors import UsageError
from runner.jobfile import Job, LineError, iter_lines, new_digest, parse_line

BATCH_LINES = 2000
# ...or fewer lines when they are big: a batch of 500 KB prompts must not hold a gigabyte.
BATCH_BYTES = 8 * 2**20
# Files at least this big are parsed in a second process (about 50,000 typical lines).
SECOND_PROCESS_MIN_BYTES = 8 * 2**20

Problem = tuple[int, str]
_HEADER = struct.Struct("!I")


class InputUnreadable(UsageError):
    """The job file could not be read to the end (or its parsing process died)."""


def parse_batches(
    path: Path, max_line_bytes: int, batch_bytes: int | None = None
) -> Generator[tuple[list[Job], list[Problem]], None, str]:
    """Jobs and problems, a batch at a time; the file's digest is the generator's return value."""
    digest = new_digest()
    jobs: list[Job] = []
    problems: list[Problem] = []
    size = 0
    batch_bytes = batch_bytes or BATCH_BYTES
    for number, raw in iter_lines(path, digest, max_line_bytes):
        if raw is None:
            problems.append((number, f"line is longer than the {max_line_bytes}-byte limit"))
        else:
            try:
                job = parse_line(raw, number)
            except LineError as exc:
                problems.append((number, str(exc)))
            else:
                if job is not None:
                    jobs.append(job)
        size += len(raw) if raw is not None else 0
        # Problems count too: a file of nothing but bad lines must not pile them up.
        if len(jobs) + len(problems) >= BATCH_LINES or size >= batch_bytes:
            yield jobs, problems
            jobs, problems, size = [], [], 0
    if jobs or problems:
        yield jobs, problems
    return digest.hexdigest()


async def batches(
    path: Path, max_line_bytes: int, digest_out: list[str]
) -> AsyncIterator[tuple[list[Job], list[Problem]]]:
    """Parsed batches of `path`; its digest is appended to `digest_out` once all are read."""
    if (await anyio.Path(path).stat()).st_size < SECOND_PROCESS_MIN_BYTES:
        source = parse_batches(path, max_line_bytes)
        while True:
            try:
                batch = next(source)
            except StopIteration as done:
                digest_out.append(done.value)
                return
            except OSError as exc:
                raise InputUnreadable(_unreadable(path, exc)) from None
            yield batch
            await anyio.lowlevel.checkpoint()
    else:
        async for batch in _batches_from_child(path, max_line_bytes, digest_out):
            yield batch


def parser_command(path: Path, max_line_bytes: int) -> list[str]:
    """The command line of the second process."""
    limits = (str(max_line_bytes), str(BATCH_BYTES))
    return [sys.executable, "-m", "runner.parsing", str(path), *limits]


async def _batches_from_child(
    path: Path, max_line_bytes: int, digest_out: list[str]
) -> AsyncIterator[tuple[list[Job], list[Problem]]]:
    command = parser_command(path, max_line_bytes)
    process = await anyio.open_process(command, stdin=subprocess.DEVNULL, stderr=None)
    try:
        assert process.stdout is not None
        frames = BufferedByteReceiveStream(process.stdout)
        while True:
            frame = await _read_frame(frames, path)
            if frame[0] == "batch":
                yield [Job(*fields) for fields in frame[1]], frame[2]
            elif frame[0] == "end":
                digest_out.append(frame[1])
                return
            else:
                raise InputUnreadable(frame[1])
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            await process.aclose()


async def _read_frame(frames: BufferedByteReceiveStream, path: Path) -> tuple[Any, ...]:
    try:
        (size,) = _HEADER.unpack(await frames.receive_exactly(_HEADER.size))
        frame = pickle.loads(await frames.receive_exactly(size))
    except (anyio.IncompleteRead, anyio.EndOfStream):
        raise InputUnreadable(
            f"the process parsing {path} ended without finishing (was it killed?); "
            "nothing was sent, run the same command again"
        ) from None
    assert isinstance(frame, tuple)
    return frame


def _unreadable(path: Path, exc: OSError) -> str:
    return f"cannot read {path}: {exc.strerror or exc}"


def _write_frame(out: BinaryIO, frame: tuple[Any, ...]) -> None:
    data = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_HEADER.pack(len(data)) + data)


def main(argv: list[str]) -> None:
    """The second process: parse the file named in argv, frames to stdout."""
    # Ctrl-C reaches the whole process group; the parent decides, and ends this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    path, max_line_bytes, batch_bytes = Path(argv[0]), int(argv[1]), int(argv[2])
    out = sys.stdout.buffer
    try:
        source = parse_batches(path, max_line_bytes, batch_bytes)
        while True:
            try:
                jobs, problems = next(source)
            except StopIteration as done:
                _write_frame(out, ("end", done.value))
                break
            # Plain tuples: unpickling slotted dataclasses costs more than inserting them.
            rows = [(j.line, j.custom_id, j.body, j.metadata, j.est_tokens, j.model) for j in jobs]
            _write_frame(out, ("batch", rows, problems))
        out.flush()
    except BrokenPipeError:
        pass  # the parent stopped reading: it is ending, and so is this
    except OSError as exc:
        _write_frame(out, ("error", _unreadable(path, exc)))
        out.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
