"""Deciding what a provider's answer means, from status, headers and body together.

A pure function: (status, headers, body) in, a `Verdict` out. The engine acts on the verdict;
nothing here sleeps, logs or raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

import orjson

from runner.ratelimit_headers import (
    parse_rate_limit_headers,
    parse_retry_after,
    parse_wait_from_message,
)


class Kind(Enum):
    """What the engine should do with the job (and the run)."""

    OK = "ok"  # a result: record it
    RATE_LIMITED = "rate_limited"  # slow down, wait, send again
    TRANSIENT = "transient"  # back off and send again
    FAILED = "failed"  # this job fails for good
    AUTH = "auth"  # the key is refused: stop the whole run
    QUOTA = "quota"  # a long-window quota or budget is spent: stop dispatch, keep jobs pending


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision about one answer."""

    kind: Kind
    code: str | None = None
    message: str | None = None
    wait_s: float | None = None
    parsed: dict[str, object] | None = None


RETRYABLE_STATUS = frozenset({408, 409, 425, 500, 502, 503, 504, 520, 522, 524, 529})
_QUOTA_WORDS = (
    "insufficient_quota",
    "daily_limit",
    "quota_exceeded",
    "resource_exhausted",
    "billing",
    "credit",
    "spend_limit",
    "budget",
)
_QUOTA_PROSE = ("per day", "daily", "perday", "quota", "credit balance", "billing")
_TRANSIENT_CODES = ("server_error", "overloaded", "timeout", "service_unavailable", "internal")
_AUTH_CODES = ("invalid_api_key", "authentication_error", "unauthorized")


def _error_fields(parsed: object) -> tuple[str | None, str | None, str | None]:
    """(type, code, message) of an error object in either the OpenAI or Selam shape."""
    if not isinstance(parsed, dict):
        return None, None, None
    error = parsed.get("error")
    if isinstance(error, str):
        return None, error, error
    if not isinstance(error, dict):
        return None, None, None
    # Google-style errors put the kind in `status` (e.g. RESOURCE_EXHAUSTED) and a number in code.
    typ, code, msg = (
        error.get("type") or error.get("status"),
        error.get("code"),
        error.get("message"),
    )
    return (
        typ if isinstance(typ, str) else None,
        str(code) if isinstance(code, str | int) else None,
        msg if isinstance(msg, str) else None,
    )


def _parse(body: bytes) -> object:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


def _is_quota(typ: str | None, code: str | None, message: str | None) -> bool:
    names = f"{typ or ''} {code or ''}".lower()
    if any(word in names for word in _QUOTA_WORDS):
        return True
    prose = (message or "").lower()
    return any(word in prose for word in _QUOTA_PROSE)


def _server_wait_s(headers: Mapping[str, str], message: str | None, now_s: float) -> float | None:
    wait = parse_retry_after(headers, now_s)
    if wait is None:
        info = parse_rate_limit_headers(headers, now_s)
        if info.requests is not None and info.requests.remaining == 0:
            wait = info.requests.reset_s
    if wait is None and message:
        wait = parse_wait_from_message(message)
    return wait


def classify(
    status: int, headers: Mapping[str, str], body: bytes, now_s: float, max_wait_s: float
) -> Verdict:
    """Classify one HTTP answer. `max_wait_s` is the longest wait still treated as a rate limit."""
    parsed = _parse(body)
    typ, code, message = _error_fields(parsed)
    if status == 200:
        return _classify_ok(parsed, typ, code, message, headers, now_s, max_wait_s)
    code = code or typ or f"http_{status}"
    message = message or (body[:500].decode("utf-8", "replace") if body else f"HTTP {status}")
    if status == 401 or (status in (400, 403) and code in _AUTH_CODES):
        return Verdict(Kind.AUTH, code, message)
    if status == 429:
        return _classify_429(typ, code, message, headers, now_s, max_wait_s)
    if status in RETRYABLE_STATUS or status >= 500:
        wait = parse_retry_after(headers, now_s)
        if wait is not None and wait > max_wait_s:
            return Verdict(Kind.QUOTA, code, message, wait)
        return Verdict(Kind.TRANSIENT, code, message, wait)
    return Verdict(Kind.FAILED, code, message, parsed=parsed if isinstance(parsed, dict) else None)


def _classify_429(
    typ: str | None,
    code: str,
    message: str,
    headers: Mapping[str, str],
    now_s: float,
    max_wait_s: float,
) -> Verdict:
    wait = _server_wait_s(headers, message, now_s)
    if _is_quota(typ, code, message) or (wait is not None and wait > max_wait_s):
        return Verdict(Kind.QUOTA, code, message, wait)
    return Verdict(Kind.RATE_LIMITED, code, message, wait)


def _classify_ok(
    parsed: object,
    typ: str | None,
    code: str | None,
    message: str | None,
    headers: Mapping[str, str],
    now_s: float,
    max_wait_s: float,
) -> Verdict:
    if isinstance(parsed, dict) and isinstance(parsed.get("choices"), list) and not code:
        return Verdict(Kind.OK, parsed=parsed)
    # A 200 that carries an error object (or no choices) is a failure, classified by its code.
    code = code or typ or "invalid_response"
    message = message or "the provider answered 200 without choices"
    lowered = f"{typ or ''} {code}".lower()
    if "rate_limit" in lowered or _is_quota(typ, code, message):
        return _classify_429(typ, code, message, headers, now_s, max_wait_s)
    if any(word in lowered for word in _AUTH_CODES):
        return Verdict(Kind.AUTH, code, message)
    if parsed is None or any(word in lowered for word in _TRANSIENT_CODES):
        return Verdict(Kind.TRANSIENT, code, message)
    return Verdict(Kind.FAILED, code, message)
