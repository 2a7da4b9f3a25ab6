"""`python -m bench [NAME ...]`: run the benchmarks (all by default) and print their tables."""

from __future__ import annotations

import sys

import anyio

from bench import ratelimits

BENCHMARKS = {"ratelimits": ratelimits.main}


def main(names: list[str]) -> None:
    """Run the named benchmarks in order."""
    for name in names or list(BENCHMARKS):
        if name not in BENCHMARKS:
            sys.exit(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
        anyio.run(BENCHMARKS[name], backend="asyncio")


main(sys.argv[1:])
