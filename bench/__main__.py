"""`python -m bench [NAME ...]`: run the benchmarks (all by default) and print their tables."""

from __future__ import annotations

import sys

import anyio
import anyio.to_thread

from bench import ratelimits, scale


async def _scale() -> None:
    # The scale cases start their own processes and event loops.
    await anyio.to_thread.run_sync(scale.main)


BENCHMARKS = {"ratelimits": ratelimits.main, "scale": _scale}


def main(names: list[str]) -> None:
    """Run the named benchmarks in order."""
    for name in names or list(BENCHMARKS):
        if name not in BENCHMARKS:
            sys.exit(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
        anyio.run(BENCHMARKS[name], backend="asyncio")


main(sys.argv[1:])
