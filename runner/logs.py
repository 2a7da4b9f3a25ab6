"""Logging set-up: where lines go, in which format, and always with secrets redacted."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import orjson

from runner.redact import RedactingFilter

LOGGER = "runner"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        """Time, level, logger and message (and the exception, when there is one)."""
        entry: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def setup_logging(
    level: str, secrets: tuple[str, ...], log_file: Path | None = None, fmt: str = "text"
) -> None:
    """Send the runner's logs to stderr (and a file), redacting every known secret."""
    formatter: logging.Formatter = (
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger(LOGGER)
    for old in root.handlers:
        old.close()
    root.handlers[:] = handlers
    root.setLevel(level.upper())
    root.propagate = False
