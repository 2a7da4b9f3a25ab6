"""Printing benchmark rows as a table and saving them as JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from bench.machine import describe, machine_note

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A fixed-width table with a header rule."""
    cells = [[str(c) for c in columns]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    print(f"\n{title}\n{describe()}")
    for n, row in enumerate(cells):
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def save(name: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    """Write the rows with the machine note to bench/results/<name>.json."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_note(),
        "rows": [dict(zip(columns, row, strict=True)) for row in rows],
    }
    path.write_text(json.dumps(payload, indent=2))
    return path
