"""Configuration: frozen settings objects, and the one place that reads the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values

from runner.errors import MissingKeyError, UsageError
from runner.jobfile import DEFAULT_MAX_LINE_BYTES

DEFAULT_BASE_URL = "https://api.selamgpt.com/v1"
DEFAULT_DB = "runner.db"
RESULTS_SUFFIX = ".results.jsonl"


@dataclass(frozen=True)
class Environment:
    """What the process environment (and a `.env` file in the working directory) provides."""

    api_key: str | None
    base_url: str
    db: str

    @classmethod
    def from_process(cls, cwd: Path | None = None) -> Environment:
        """Read os.environ, falling back to `.env` in the working directory for unset names."""
        dotenv_path = (cwd or Path.cwd()) / ".env"
        file_values = dotenv_values(dotenv_path) if dotenv_path.is_file() else {}
        merged: dict[str, str] = {k: v for k, v in file_values.items() if v is not None}
        merged.update(os.environ)
        return cls.from_mapping(merged)

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Environment:
        """Pick the key, base URL and database from a mapping of variables."""
        key = (env.get("SELAM_API_KEY") or env.get("OPENAI_API_KEY") or "").strip() or None
        base_url = (env.get("SELAM_BASE_URL") or env.get("OPENAI_BASE_URL") or "").strip()
        base_url = base_url or DEFAULT_BASE_URL
        return cls(api_key=key, base_url=base_url, db=env.get("RUNNER_DB") or DEFAULT_DB)

    def require_key(self, mock_hint: bool = True) -> str:
        """The API key, or an error that says how to provide one."""
        if not self.api_key:
            hint = "; or pass --mock to run against the built-in emulator" if mock_hint else ""
            raise MissingKeyError(
                "no API key: set SELAM_API_KEY (or OPENAI_API_KEY), e.g. "
                "`export SELAM_API_KEY=<your key>` or a line SELAM_API_KEY=<your key> in ./.env"
                + hint
            )
        if not self.api_key.isascii() or any(ord(ch) < 32 or ord(ch) == 127 for ch in self.api_key):
            raise UsageError(
                "the API key holds a control or non-ASCII character; check SELAM_API_KEY"
            )
        return self.api_key

    def require_base_url(self) -> str:
        """The base URL, checked to be http(s)://host[:port][/path] before anything is sent."""
        problem = base_url_problem(self.base_url)
        if problem is not None:
            raise UsageError(
                f"SELAM_BASE_URL / OPENAI_BASE_URL {self.base_url!r} {problem}; "
                f"expected e.g. {DEFAULT_BASE_URL}"
            )
        return self.base_url

    def __repr__(self) -> str:
        # The key must never reach a log or traceback through a repr.
        shown = "set" if self.api_key else "unset"
        return f"Environment(api_key=<{shown}>, base_url={self.base_url!r}, db={self.db!r})"


@dataclass(frozen=True)
class RunOptions:
    """Everything `runner run` was asked to do for one input file."""

    input_path: Path
    out_path: Path
    db: str
    concurrency: int = 16
    max_retries: int = 5
    timeout_s: float = 120.0
    max_wait_s: float = 120.0
    rpm: float | None = None
    tpm: float | None = None
    rpd: float | None = None
    restart: bool = False
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    max_tokens: int | None = None
    max_cost: float | None = None
    max_runtime_s: float | None = None
    prices_path: Path | None = None
    price_overrides: tuple[str, ...] = ()
    cache_mode: str = "auto"  # auto (deterministic requests only) | always | off
    cache_url: str | None = None  # None: the run database; redis://... to share across machines
    cache_ttl_s: float = 30 * 86_400.0
    progress: str = "auto"  # auto (live on a terminal, plain lines otherwise) | live | plain | off
    progress_interval_s: float = 30.0

    @staticmethod
    def default_out_path(input_path: Path, mock: bool = False) -> Path:
        """`<input stem>.results.jsonl` beside the input (`.mock.results.jsonl` for --mock).

        The results path names the run, so an emulator run and a real one of the same file are
        two runs: a keyed run never resumes, and so never keeps, the emulator's answers."""
        middle = ".mock" if mock else ""
        return input_path.with_name(f"{input_path.stem}{middle}{RESULTS_SUFFIX}")


def base_url_problem(url: str) -> str | None:
    """Why `url` cannot be the API's base URL, or None when it can."""
    try:
        parsed = urlsplit(url)
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    try:
        port = parsed.port
    except ValueError as exc:
        return f"has a bad port ({exc})"
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return "is not an http(s) URL"
    if port == 0:
        return "names port 0"
    if not url.isascii() or any(ch.isspace() for ch in url):
        return (
            "holds spaces or non-ASCII characters (write the host in punycode, the path %-encoded)"
        )
    if parsed.username is not None or parsed.password is not None:
        return "holds a user name or password (the key belongs in SELAM_API_KEY)"
    return None


def endpoint_url(base_url: str, path: str) -> str:
    """`path` appended to the base URL's path; its query (e.g. ?api-version=) stays last."""
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path, fragment=""))
