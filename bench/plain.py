"""The baseline client as a command: `python -m bench.plain JOBS OUT BASE_URL`.

A plain aiohttp client at a fixed concurrency that persists nothing but appends each answer
to OUT. It runs as a process of its own, like the runner, so both are timed the same way:
from start to exit, reading the job file and writing a results file.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import BinaryIO

import aiohttp
import anyio
import orjson

CONCURRENCY = 64
KEY = "sk-bench-0000000000"


async def plain_client(lines: list[bytes], out: BinaryIO, base_url: str) -> float:
    """The baseline: fixed concurrency, no persistence but an appended results file."""
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        queue = iter(lines)

        async def worker() -> None:
            for line in queue:
                body = orjson.dumps(orjson.loads(line)["body"])
                async with session.post(f"{base_url}/chat/completions", data=body) as resp:
                    out.write(await resp.read() + b"\n")

        async with anyio.create_task_group() as tg:
            for _ in range(CONCURRENCY):
                tg.start_soon(worker)
    return time.monotonic() - started


def main(argv: list[str]) -> None:
    """Send every line of JOBS to BASE_URL; append the answers to OUT."""
    jobs, out, base_url = Path(argv[0]), Path(argv[1]), argv[2]
    lines = jobs.read_bytes().splitlines()
    with out.open("wb") as fh:
        anyio.run(plain_client, lines, fh, base_url)


if __name__ == "__main__":
    main(sys.argv[1:])
