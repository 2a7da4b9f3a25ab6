"""What machine a benchmark ran on, printed with every table."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name, where Linux tells it."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown cpu"


def machine_note() -> dict[str, object]:
    """Cores, CPU, OS and Python version."""
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
    }


def describe() -> str:
    """One line for the top of a table."""
    m = machine_note()
    return f"machine: {m['cores']} cores, {m['cpu']}, {m['os']}, Python {m['python']}"
