"""Fixtures shared by the tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.support import write_jsonl


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def write_jobs(tmp_path: Path) -> Callable[..., Path]:
    """A factory writing JSONL job files into tmp_path."""

    def write(lines: Iterable[dict[str, Any] | str], name: str = "jobs.jsonl") -> Path:
        return write_jsonl(tmp_path / name, lines)

    return write
