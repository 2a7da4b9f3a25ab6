"""Read rate-limit state from response headers and error text, in every dialect we meet.

Dialects, by priority when a response carries several: IETF structured (`RateLimit` +
`RateLimit-Policy`), OpenAI (`x-ratelimit-*-requests|tokens`), Selam (`X-RateLimit-*`), IETF old
drafts (`RateLimit-Limit/Remaining/Reset`), Anthropic (`anthropic-ratelimit-*`). Every function
is pure and total: garbage yields None and, for present headers, a line in `problems`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class Quota:
    """One budget (requests or tokens) as a response reports it."""

    limit: float | None = None  # the cap
    remaining: float | None = None  # what is left now
    reset_s: float | None = None  # seconds from now until quota frees up (>= 0)
    window_s: float | None = None  # the window length, only when the dialect states it
    reset_is_full: bool = False  # reset_s counts to full restoration, not to the first refill


@dataclass(frozen=True)
class RateLimitInfo:
    """Request and token budgets from one response, the dialect they came from, and problems."""

    requests: Quota | None = None
    tokens: Quota | None = None
    dialect: str = "none"  # "selam" | "openai" | "ietf" | "anthropic" | "none"
    problems: tuple[str, ...] = ()  # one line per present header value that did not parse


_Pair = tuple[Quota | None, Quota | None]
_KINDS = ("requests", "tokens")
_NUMBER = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")
_GO_UNITS = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}
_GO_SEGMENT = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(h|ms|us|µs|μs|ns|m|s)")
_GO_DURATION = re.compile(rf"(?:{_GO_SEGMENT.pattern}\s*)+")
_WORD_UNIT = r"(?:milliseconds?|msecs?|ms|hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)(?![a-z])"
_WORD_SEGMENT = re.compile(rf"([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*({_WORD_UNIT})", re.IGNORECASE)
_WORD_DURATION = rf"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*{_WORD_UNIT}"
# One optional separator after greedy spaces keeps backtracking linear on long blank runs.
_WORD_DURATIONS = rf"({_WORD_DURATION}(?:\s*(?:(?:,|and)\s*)?{_WORD_DURATION})*)"
# An explicit "try again in" beats a bare "in", which could belong to other prose.
_WAIT_PATTERNS = (
    re.compile(rf"\b(?:try\s+again|retry|wait)\s+(?:in|after|for)\s+{_WORD_DURATIONS}", re.I),
    re.compile(rf"\b(?:in|after)\s+{_WORD_DURATIONS}", re.I),
)


def _number(text: str) -> float | None:
    # float() alone would accept "nan", "inf" and "1_000", none of which a header means.
    if not _NUMBER.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _non_negative(value: float) -> float | None:
    return max(0.0, value) if math.isfinite(value) else None


def _show(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")


def _date_s(text: str) -> float | None:
    """Unix seconds of an HTTP-date or ISO-8601 / RFC 3339 string, else None."""
    # Imported here: the email package costs 10 ms of every start-up, and dates are rare.
    from email.utils import parsedate_to_datetime

    for parse in (parsedate_to_datetime, datetime.fromisoformat):
        try:
            moment = parse(text.strip())
            if moment.tzinfo is None:  # a zone-less stamp from a server is UTC in practice
                moment = moment.replace(tzinfo=UTC)
            return moment.timestamp()
        except (ValueError, TypeError, OverflowError, IndexError):
            continue
    return None


def parse_duration(text: str) -> float | None:
    """Seconds in a Go-style duration ("6m0s", "20ms", "1h2m3.5s") or a bare number."""
    compact = text.strip().lower()
    number = _number(compact)
    if number is not None:
        return number if number >= 0 else None
    if not _GO_DURATION.fullmatch(compact):
        return None
    total = sum(float(n) * _GO_UNITS[unit] for n, unit in _GO_SEGMENT.findall(compact))
    return total if math.isfinite(total) else None


def parse_reset(value: str, now_s: float) -> float | None:
    """Seconds from now until a reset given as delta, epoch s/ms, date or duration."""
    number = _number(value)
    if number is not None:
        if number == -1:  # Azure's "unknown" placeholder
            return None
        if number > 1e12:
            return _non_negative(number / 1000 - now_s)
        if number > 1e9:  # more than 31 years as a delta is implausible: an epoch time
            return _non_negative(number - now_s)
        return _non_negative(number)
    moment = _date_s(value)
    if moment is not None:
        return _non_negative(moment - now_s)
    return parse_duration(value)


def parse_retry_after(headers: Mapping[str, str], now_s: float) -> float | None:
    """Seconds to wait per `retry-after-ms`, else `Retry-After` (seconds or HTTP-date)."""
    values = _Reader(headers, now_s)
    millis = _number(values.get("retry-after-ms") or "")
    if millis is not None and millis >= 0:
        return millis / 1000
    raw = values.get("retry-after")
    if raw is None:
        return None
    seconds = _number(raw)
    if seconds is not None:
        return seconds if seconds >= 0 else None
    moment = _date_s(raw)
    return None if moment is None else _non_negative(moment - now_s)


def parse_wait_from_message(text: str) -> float | None:
    """Seconds of a wait named in error prose ("try again in 20ms", "retry after 2 minutes")."""
    for pattern in _WAIT_PATTERNS:
        match = pattern.search(text)
        if match:
            total = sum(float(n) * _word_unit_s(u) for n, u in _WORD_SEGMENT.findall(match[1]))
            return total if math.isfinite(total) else None
    return None


def _word_unit_s(unit: str) -> float:
    unit = unit.lower()
    if unit.startswith(("ms", "milli")):
        return 1e-3
    return {"h": 3600.0, "m": 60.0}.get(unit[0], 1.0)


class _Reader:
    """Case-insensitive header access that records values it cannot parse."""

    def __init__(self, headers: Mapping[str, str], now_s: float) -> None:
        self.now_s = now_s
        self._values: dict[str, tuple[str, str]] = {}
        for key, value in headers.items():
            if isinstance(key, str) and isinstance(value, str):
                self._values.setdefault(key.strip().lower(), (key, value))
        self.problems: list[str] = []

    def get(self, name: str) -> str | None:
        found = self._values.get(name)
        return None if found is None else found[1]

    def has_any(self, *names: str) -> bool:
        return any(name in self._values for name in names)

    def complain(self, name: str, detail: str) -> None:
        self.problems.append(f"{self._values[name][0]}: {detail}")

    def parse(self, name: str, parse: Callable[[str], float | None], what: str) -> float | None:
        raw = self.get(name)
        if raw is None:
            return None
        value = parse(raw)
        if value is None and _number(raw) != -1:  # -1 is a known placeholder, not garbage
            self.complain(name, f"{_show(raw)} is not {what}")
        return value

    def reset(self, name: str) -> float | None:
        return self.parse(name, lambda v: parse_reset(v, self.now_s), "a number or date")

    def limit(self, name: str) -> tuple[float | None, float | None]:
        """The first quota of a `100, 100;w=60` list and the window stated for it."""
        raw = self.get(name)
        if raw is None:
            return None, None
        items = _sf_list(raw)
        limit = _number(items[0][0]) if items else None
        if limit is None:
            self.complain(name, f"{_show(raw)} is not a number")
            return None, None
        windows = [p["w"] for n, p in items if "w" in p and _number(n) == limit]
        return limit, _number(windows[0]) if windows else None


def _quota(
    limit: float | None,
    remaining: float | None,
    reset_s: float | None,
    window_s: float | None = None,
    full: bool = False,
) -> Quota | None:
    if limit is not None and limit <= 0:
        # Azure sends -1 / 0 placeholders; a served request proves the cap is not zero, and a
        # zero "remaining" beside such a cap is a placeholder too.
        limit = None
        remaining = None if remaining is not None and remaining <= 0 else remaining
    if remaining is not None and remaining < 0:
        remaining = None
    if window_s is not None and window_s <= 0:
        window_s = None
    if limit is None and remaining is None and reset_s is None and window_s is None:
        return None
    return Quota(limit, remaining, reset_s, window_s, full)


def _split(text: str, sep: str) -> list[str]:
    """Non-empty pieces between `sep`s that sit outside double-quoted strings."""
    return re.findall(rf'(?:"(?:\\.|[^"\\])*"|[^{sep}"])+', text)


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def _sf_list(raw: str) -> list[tuple[str, dict[str, str]]]:
    """Items of a structured-field list as (name, params); lenient about syntax."""
    items = []
    for member in _split(raw, ","):
        name, *params = _split(member, ";") or [""]
        if name.strip():
            pairs = (p.partition("=") for p in params)
            items.append((_unquote(name), {k.strip().lower(): _unquote(v) for k, _, v in pairs}))
    return items


def _policy_kind(name: str, unit: str | None) -> str | None:
    if "token" in f"{name} {unit or ''}".lower():
        return "tokens"
    return "requests" if unit in (None, "requests") else None  # bytes, concurrency: not ours


def _tightest(quotas: list[Quota]) -> Quota | None:
    # Several policies of one kind (per minute and per day): the one with least left binds.
    def key(q: Quota) -> tuple[float, float]:
        return (math.inf if q.remaining is None else q.remaining, -(q.reset_s or 0.0))

    return min(quotas, key=key, default=None)


def _ietf_structured(r: _Reader) -> _Pair | None:
    if not r.has_any("ratelimit", "ratelimit-policy"):
        return None
    policies = dict(_sf_list(r.get("ratelimit-policy") or ""))
    states = dict(_sf_list(r.get("ratelimit") or ""))
    found: dict[str, list[Quota]] = {kind: [] for kind in _KINDS}
    for name in dict.fromkeys([*states, *policies]):
        policy, state = policies.get(name, {}), states.get(name, {})
        kind = _policy_kind(name, policy.get("qu"))
        if kind is None or ("q" not in policy and "r" not in state):
            continue
        quota = _quota(
            limit=_sf_number(r, "ratelimit-policy", policy, "q"),
            remaining=_sf_number(r, "ratelimit", state, "r"),
            reset_s=_sf_number(r, "ratelimit", state, "t"),
            window_s=_sf_number(r, "ratelimit-policy", policy, "w"),
        )
        if quota is not None:
            found[kind].append(quota)
    # Old drafts also sent `RateLimit-Policy: 100;w=60`: only an item with none of the keys
    # either form uses is garbage.
    for header, items, keys in (("ratelimit", states, "rt"), ("ratelimit-policy", policies, "qw")):
        raw = r.get(header)
        if raw is not None and not any(key in p for p in items.values() for key in keys):
            r.complain(header, f"{_show(raw)} has no usable policy")
    return _tightest(found["requests"]), _tightest(found["tokens"])


def _sf_number(r: _Reader, header: str, params: dict[str, str], key: str) -> float | None:
    if key not in params:
        return None
    value = _number(params[key])
    if value is None:
        r.complain(header, f"{key}={_show(params[key])} is not a number")
        return None
    if value == -1:
        return None
    return max(0.0, value) if key == "t" else value


def _per_kind(r: _Reader, pattern: str) -> _Pair | None:
    """OpenAI and Anthropic: one limit/remaining/reset triple per budget kind."""
    fields = ("limit", "remaining", "reset")
    names = {(f, k): pattern.format(field=f, kind=k) for f in fields for k in _KINDS}
    if not r.has_any(*names.values()):
        return None

    def quota(kind: str) -> Quota | None:
        limit = r.parse(names["limit", kind], _number, "a number")
        remaining = r.parse(names["remaining", kind], _number, "a number")
        # Both vendors document the reset as the moment the budget is fully restored.
        return _quota(limit, remaining, r.reset(names["reset", kind]), full=True)

    return quota("requests"), quota("tokens")


def _counters(r: _Reader, prefix: str) -> _Pair | None:
    """Selam `X-RateLimit-*` and IETF old `RateLimit-*`: one request budget."""
    fields = ("limit", "remaining", "reset", "reset-after")
    if not r.has_any(*(prefix + f for f in fields)):
        return None
    limit, window = r.limit(prefix + "limit")
    remaining = r.parse(prefix + "remaining", _number, "a number")
    reset, after = r.reset(prefix + "reset"), r.reset(prefix + "reset-after")
    return _quota(limit, remaining, reset if after is None else after, window), None


_NONE = RateLimitInfo()

_DIALECTS: tuple[tuple[str, Callable[[_Reader], _Pair | None]], ...] = (
    ("ietf", _ietf_structured),
    ("openai", lambda r: _per_kind(r, "x-ratelimit-{field}-{kind}")),
    ("selam", lambda r: _counters(r, "x-ratelimit-")),
    ("ietf", lambda r: _counters(r, "ratelimit-")),
    ("anthropic", lambda r: _per_kind(r, "anthropic-ratelimit-{kind}-{field}")),
)


def parse_rate_limit_headers(headers: Mapping[str, str], now_s: float) -> RateLimitInfo:
    """Request and token budgets from response headers, whichever dialect carries them."""
    # Every dialect's header names contain "ratelimit"; most responses of a header-less
    # provider are answered here without building the reader.
    if not any("ratelimit" in name.lower() for name in headers):
        return _NONE
    reader = _Reader(headers, now_s)
    # Every dialect runs, so each unparseable header is reported even if outranked.
    present = [(name, pair) for name, parse in _DIALECTS if (pair := parse(reader)) is not None]
    requests = next((pair[0] for _, pair in present if pair[0] is not None), None)
    tokens = next((pair[1] for _, pair in present if pair[1] is not None), None)
    # Name the dialect that supplied data; failing that, the first whose headers were there.
    useful = [name for name, pair in present if pair != (None, None)] + [n for n, _ in present]
    dialect = useful[0] if useful else "none"
    return RateLimitInfo(requests, tokens, dialect, tuple(reader.problems))
