"""Rate-limit header parsing: every dialect and awkward form as a named case, plus totality."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from runner.ratelimit_headers import (
    Quota,
    RateLimitInfo,
    parse_duration,
    parse_rate_limit_headers,
    parse_reset,
    parse_retry_after,
    parse_wait_from_message,
)

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
FAST = settings(max_examples=150, deadline=None, database=None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("1s", 1.0, id="1s"),
        pytest.param("6m0s", 360.0, id="6m0s"),
        pytest.param("20ms", 0.02, id="20ms"),
        pytest.param("1h2m3.5s", 3723.5, id="1h2m3.5s"),
        pytest.param("0.5s", 0.5, id="0.5s"),
        pytest.param("2m59.56s", 179.56, id="fractional-seconds-after-minutes"),
        pytest.param("1.5", 1.5, id="bare-float-is-seconds"),
        pytest.param("2", 2.0, id="bare-int-is-seconds"),
        pytest.param(" 1m 30s ", 90.0, id="spaces-between-segments"),
        pytest.param("1H", 3600.0, id="upper-case-unit"),
        pytest.param("1500us", 0.0015, id="go-microseconds"),
        pytest.param("0s", 0.0, id="zero"),
        pytest.param("", None, id="empty"),
        pytest.param("soon", None, id="word"),
        pytest.param("-1s", None, id="negative-duration"),
        pytest.param("-1", None, id="negative-number"),
        pytest.param("5x", None, id="unknown-unit"),
        pytest.param("1 5", None, id="two-bare-numbers"),
        pytest.param("nan", None, id="nan"),
        pytest.param("inf", None, id="inf"),
        pytest.param("1e400", None, id="overflowing-number"),
    ],
)
def test_parse_duration(text: str, expected: float | None) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("30", 30.0, id="delta-seconds"),
        pytest.param("1.25", 1.25, id="delta-fractional"),
        pytest.param("0", 0.0, id="delta-zero"),
        pytest.param("1700000060", 60.0, id="epoch-seconds"),
        pytest.param("1700000060.5", 60.5, id="epoch-seconds-fractional"),
        pytest.param("1700000060000", 60.0, id="epoch-milliseconds"),
        pytest.param("1699999990", 0.0, id="epoch-in-the-past-clamps-to-0"),
        pytest.param("2023-11-14T22:14:20Z", 60.0, id="iso-8601-z"),
        pytest.param("2023-11-14T23:14:20+01:00", 60.0, id="rfc-3339-offset"),
        pytest.param("2023-11-14T22:14:20.5Z", 60.5, id="rfc-3339-fraction"),
        pytest.param("2023-11-14T22:14:20", 60.0, id="iso-naive-is-utc"),
        pytest.param("Tue, 14 Nov 2023 22:14:20 GMT", 60.0, id="http-date"),
        pytest.param("6m0s", 360.0, id="duration"),
        pytest.param("-1", None, id="azure-placeholder"),
        pytest.param("-5", 0.0, id="negative-delta-clamps-to-0"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("", None, id="empty"),
    ],
)
def test_parse_reset(value: str, expected: float | None) -> None:
    assert parse_reset(value, NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"Retry-After": "20"}, 20.0, id="seconds"),
        pytest.param({"Retry-After": "1.5"}, 1.5, id="fractional-seconds"),
        pytest.param({"Retry-After": "0"}, 0.0, id="zero"),
        pytest.param({"Retry-After": "277403"}, 277403.0, id="far-future-not-capped"),
        pytest.param({"retry-after-ms": "1500", "Retry-After": "9"}, 1.5, id="ms-before-seconds"),
        pytest.param({"retry-after-ms": "20.5"}, 0.0205, id="fractional-ms"),
        pytest.param({"retry-after-ms": "-1", "Retry-After": "3"}, 3.0, id="bad-ms-falls-back"),
        pytest.param({"retry-after-ms": "soon", "Retry-After": "3"}, 3.0, id="garbage-ms"),
        pytest.param({"Retry-After": "Tue, 14 Nov 2023 22:14:20 GMT"}, 60.0, id="http-date"),
        pytest.param({"Retry-After": "Tue, 14 Nov 2023 22:00:00 GMT"}, 0.0, id="date-in-past"),
        pytest.param({"RETRY-AFTER": "7"}, 7.0, id="upper-case-name"),
        pytest.param({"Retry-After-Ms": "250"}, 0.25, id="mixed-case-ms-name"),
        pytest.param({"Retry-After": "-3"}, None, id="negative"),
        pytest.param({"Retry-After": "soon"}, None, id="garbage"),
        pytest.param({"Content-Type": "application/json"}, None, id="absent"),
        pytest.param({}, None, id="no-headers"),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("Rate limit exceeded. Please try again in 60 seconds.", 60.0, id="60-seconds"),
        pytest.param("Please retry in 7.5s", 7.5, id="7.5s"),
        pytest.param("Please try again in 20ms.", 0.02, id="20ms"),
        pytest.param("try again in 1m30s", 90.0, id="1m30s"),
        pytest.param("Please retry after 2 minutes", 120.0, id="retry-after-2-minutes"),
        pytest.param("Limit resets in 6m0s", 360.0, id="bare-in-6m0s"),
        pytest.param("Try again in 1 hour and 5 minutes", 3900.0, id="words-joined-by-and"),
        pytest.param("wait for 3 secs", 3.0, id="wait-for-secs"),
        pytest.param(
            "Rate limit reached for gpt-4 in organization org-abc on tokens per min (TPM): "
            "Limit 10000, Used 9000, Requested 2000. Please try again in 6.6s.",
            6.6,
            id="openai-429-prose",
        ),
        pytest.param("in 5 minutes, or try again in 2s", 2.0, id="explicit-beats-bare-in"),
        pytest.param("Rate limit exceeded", None, id="no-wait"),
        pytest.param("try again in a moment", None, id="no-number"),
        pytest.param("await 5s", None, id="no-keyword"),
        pytest.param("", None, id="empty"),
    ],
)
def test_parse_wait_from_message(text: str, expected: float | None) -> None:
    assert parse_wait_from_message(text) == pytest.approx(expected)


def _selam(**extra: str) -> dict[str, str]:
    return {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "9", **extra}


OPENAI = {
    "x-ratelimit-limit-requests": "60",
    "x-ratelimit-limit-tokens": "150000",
    "x-ratelimit-remaining-requests": "59",
    "x-ratelimit-remaining-tokens": "149984",
    "x-ratelimit-reset-requests": "1s",
    "x-ratelimit-reset-tokens": "6m0s",
}
OPENAI_REQUESTS = Quota(60, 59, 1.0, reset_is_full=True)
OPENAI_TOKENS = Quota(150000, 149984, 360.0, reset_is_full=True)
ANTHROPIC = {
    "anthropic-ratelimit-requests-limit": "50",
    "anthropic-ratelimit-requests-remaining": "49",
    "anthropic-ratelimit-requests-reset": "2023-11-14T22:13:21Z",
    "anthropic-ratelimit-tokens-limit": "40000",
    "anthropic-ratelimit-tokens-remaining": "39000",
    "anthropic-ratelimit-tokens-reset": "2023-11-14T22:13:26.5Z",
}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(
            _selam(**{"X-RateLimit-Reset-After": "6.5"}),
            RateLimitInfo(Quota(10, 9, 6.5), dialect="selam"),
            id="selam-reset-after-float",
        ),
        pytest.param(
            _selam(**{"X-RateLimit-Reset": "1700000060"}),
            RateLimitInfo(Quota(10, 9, 60.0), dialect="selam"),
            id="selam-reset-epoch-seconds",
        ),
        pytest.param(
            _selam(**{"X-RateLimit-Reset": "1700000060000"}),
            RateLimitInfo(Quota(10, 9, 60.0), dialect="selam"),
            id="selam-reset-epoch-ms",
        ),
        pytest.param(
            _selam(**{"X-RateLimit-Reset": "60"}),
            RateLimitInfo(Quota(10, 9, 60.0), dialect="selam"),
            id="selam-reset-delta",
        ),
        pytest.param(
            _selam(**{"X-RateLimit-Reset": "2023-11-14T22:14:20Z"}),
            RateLimitInfo(Quota(10, 9, 60.0), dialect="selam"),
            id="selam-reset-iso-8601",
        ),
        pytest.param(
            _selam(**{"X-RateLimit-Reset": "Tue, 14 Nov 2023 22:14:20 GMT"}),
            RateLimitInfo(Quota(10, 9, 60.0), dialect="selam"),
            id="selam-reset-http-date",
        ),
        pytest.param(
            _selam(**{"X-RateLimit-Reset": "1700086400", "X-RateLimit-Reset-After": "12"}),
            RateLimitInfo(Quota(10, 9, 12.0), dialect="selam"),
            id="reset-after-preferred-over-reset",
        ),
        pytest.param(
            {"x-ratelimit-limit": "5", "X-RATELIMIT-REMAINING": "0", "X-Ratelimit-Reset": "12"},
            RateLimitInfo(Quota(5, 0, 12.0), dialect="selam"),
            id="mixed-case-names",
        ),
        pytest.param(OPENAI, RateLimitInfo(OPENAI_REQUESTS, OPENAI_TOKENS, "openai"), id="openai"),
        pytest.param(
            {
                "x-ratelimit-reset-requests": "20ms",
                "x-ratelimit-reset-tokens": "1h2m3.5s",
                "x-ratelimit-limit-tokens_usage_based": "999",
                "x-ratelimit-remaining-tokens_usage_based": "1",
            },
            RateLimitInfo(
                Quota(reset_s=0.02, reset_is_full=True),
                Quota(reset_s=3723.5, reset_is_full=True),
                "openai",
            ),
            id="openai-20ms-and-1h2m3.5s-usage-based-ignored",
        ),
        pytest.param(
            {
                "x-ratelimit-limit-requests": "-1",
                "x-ratelimit-remaining-requests": "-1",
                "x-ratelimit-reset-requests": "-1",
                "x-ratelimit-limit-tokens": "0",
                "x-ratelimit-remaining-tokens": "0",
            },
            RateLimitInfo(dialect="openai"),
            id="azure-minus-one-and-zero-placeholders",
        ),
        pytest.param(
            {"x-ratelimit-limit-requests": "-1", "x-ratelimit-remaining-requests": "7"},
            RateLimitInfo(Quota(remaining=7, reset_is_full=True), dialect="openai"),
            id="azure-placeholder-limit-keeps-real-remaining",
        ),
        pytest.param(
            {
                "RateLimit-Limit": "100, 100;w=60",
                "RateLimit-Remaining": "42",
                "RateLimit-Reset": "5",
            },
            RateLimitInfo(Quota(100, 42, 5.0, 60.0), dialect="ietf"),
            id="ietf-old-limit-list-with-window",
        ),
        pytest.param(
            {"RateLimit-Limit": "100", "RateLimit-Remaining": "1", "RateLimit-Policy": "100;w=60"},
            RateLimitInfo(Quota(100, 1), dialect="ietf"),
            id="ietf-old-with-draft-06-policy",
        ),
        pytest.param(
            {"RateLimit-Policy": '"default";q=100;w=60', "RateLimit": '"default";r=42;t=5'},
            RateLimitInfo(Quota(100, 42, 5.0, 60.0), dialect="ietf"),
            id="ietf-structured",
        ),
        pytest.param(
            {
                "RateLimit-Policy": '"minute";q=10;w=60, "day";q=500;w=86400;pk=:abc=:, '
                '"tpm";q=5000;w=60;qu="tokens", "bytes";q=1000;w=1;qu="content-bytes"',
                "RateLimit": '"minute";r=8;t=20, "day";r=2;t=7200, "tpm";r=4000;t=3, "bytes";r=0',
            },
            RateLimitInfo(Quota(500, 2, 7200.0, 86400.0), Quota(5000, 4000, 3.0, 60.0), "ietf"),
            id="ietf-multiple-policies-tightest-wins-bytes-ignored",
        ),
        pytest.param(
            {"RateLimit": '"day";r=3;t=40'},
            RateLimitInfo(Quota(None, 3, 40.0), dialect="ietf"),
            id="ietf-structured-without-policy",
        ),
        pytest.param(
            ANTHROPIC,
            RateLimitInfo(
                Quota(50, 49, 1.0, reset_is_full=True),
                Quota(40000, 39000, 6.5, reset_is_full=True),
                "anthropic",
            ),
            id="anthropic-rfc-3339",
        ),
        pytest.param(
            {
                "RateLimit-Policy": '"default";q=100;w=60',
                "RateLimit": '"default";r=42;t=5',
                **OPENAI,
                **_selam(),
            },
            RateLimitInfo(Quota(100, 42, 5.0, 60.0), OPENAI_TOKENS, "ietf"),
            id="priority-ietf-structured-then-openai-tokens",
        ),
        pytest.param(
            {**_selam(), **OPENAI},
            RateLimitInfo(OPENAI_REQUESTS, OPENAI_TOKENS, "openai"),
            id="priority-openai-over-selam",
        ),
        pytest.param(
            {**_selam(), "anthropic-ratelimit-tokens-remaining": "7000"},
            RateLimitInfo(Quota(10, 9), Quota(remaining=7000, reset_is_full=True), "selam"),
            id="selam-requests-anthropic-tokens",
        ),
        pytest.param(
            {"x-ratelimit-limit-requests": "-1", **_selam()},
            RateLimitInfo(Quota(10, 9), dialect="selam"),
            id="placeholder-dialect-yields-to-one-with-data",
        ),
        pytest.param({"Content-Type": "application/json"}, RateLimitInfo(), id="unrelated"),
        pytest.param({}, RateLimitInfo(), id="no-headers"),
    ],
)
def test_parse_rate_limit_headers(headers: dict[str, str], expected: RateLimitInfo) -> None:
    assert parse_rate_limit_headers(headers, NOW) == expected


@pytest.mark.parametrize(
    ("headers", "problems"),
    [
        pytest.param(
            {"X-RateLimit-Reset": "soon"},
            ("X-RateLimit-Reset: 'soon' is not a number or date",),
            id="selam-reset-word",
        ),
        pytest.param(
            {"X-RateLimit-Limit": "lots", "X-RateLimit-Remaining": "NaN"},
            (
                "X-RateLimit-Limit: 'lots' is not a number",
                "X-RateLimit-Remaining: 'NaN' is not a number",
            ),
            id="selam-counts",
        ),
        pytest.param(
            {"x-ratelimit-reset-tokens": "6 fortnights", "x-ratelimit-limit-requests": "1_000"},
            (
                "x-ratelimit-limit-requests: '1_000' is not a number",
                "x-ratelimit-reset-tokens: '6 fortnights' is not a number or date",
            ),
            id="openai",
        ),
        pytest.param(
            {"RateLimit": '"default";r=many;t=5', "RateLimit-Policy": '"default";q=10;w=x'},
            ("RateLimit: r='many' is not a number", "RateLimit-Policy: w='x' is not a number"),
            id="ietf-structured-params",
        ),
        pytest.param(
            {"RateLimit": "soon"},
            ("RateLimit: 'soon' has no usable policy",),
            id="ietf-structured-word",
        ),
        pytest.param(
            {"anthropic-ratelimit-tokens-reset": "x" * 100},
            ("anthropic-ratelimit-tokens-reset: '" + "x" * 40 + "...' is not a number or date",),
            id="long-value-is-shortened",
        ),
    ],
)
def test_garbage_is_reported_not_raised(headers: dict[str, str], problems: tuple[str, ...]) -> None:
    assert parse_rate_limit_headers(headers, NOW).problems == problems


def test_garbage_beside_good_values_keeps_the_good_ones() -> None:
    """One unparseable header costs only its own field."""
    info = parse_rate_limit_headers(_selam(**{"X-RateLimit-Reset": "soon"}), NOW)
    assert info == RateLimitInfo(
        Quota(10, 9),
        dialect="selam",
        problems=("X-RateLimit-Reset: 'soon' is not a number or date",),
    )


def test_zone_less_stamp_is_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reset without an offset must not shift with the machine's time zone."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert parse_reset("2023-11-14T22:14:20", NOW) == 60.0
    finally:
        monkeypatch.undo()
        time.tzset()


def test_aiohttp_headers_first_value_wins() -> None:
    """aiohttp passes a CIMultiDictProxy; a repeated header uses its first value."""
    raw = CIMultiDict([("X-RateLimit-Remaining", "3"), ("x-ratelimit-remaining", "99")])
    raw.add("Retry-After", "4")
    headers = CIMultiDictProxy(raw)
    assert parse_rate_limit_headers(headers, NOW).requests == Quota(remaining=3)
    assert parse_retry_after(headers, NOW) == 4.0


# Property tests: any text, including real header names with arbitrary values, never raises.

HEADER_NAMES = [
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-reset-after",
    *(
        f"x-ratelimit-{f}-{k}"
        for f in ("limit", "remaining", "reset")
        for k in ("requests", "tokens")
    ),
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "ratelimit",
    "ratelimit-policy",
    *(
        f"anthropic-ratelimit-{k}-{f}"
        for k in ("requests", "tokens")
        for f in ("limit", "remaining", "reset")
    ),
    "retry-after",
    "retry-after-ms",
]
names = st.one_of(
    st.sampled_from(HEADER_NAMES).flatmap(
        lambda n: st.lists(st.booleans(), min_size=len(n), max_size=len(n)).map(
            lambda upper: "".join(c.upper() if u else c for c, u in zip(n, upper, strict=True))
        )
    ),
    st.text(max_size=20),
)
awkward = st.sampled_from(
    [
        "-1",
        "0",
        "1e308",
        "1e400",
        "nan",
        "-inf",
        "1_000",
        "6m0s",
        "20ms",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "Tue, 14 Nov 2023 22:14:20 GMT",
        '"a";q=1;w=-1, "b";r=x',
        '"',
        ";;",
        ",",
        '"token";r=1e999;t=-1',
    ]
)
values = st.one_of(
    st.text(max_size=40),
    awkward,
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
)
any_now = st.floats(allow_nan=True, allow_infinity=True)


def _is_wait(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isfinite(value) and value >= 0)


@FAST
@given(st.dictionaries(names, values, max_size=8), any_now)
def test_headers_never_raise(headers: dict[str, str], now_s: float) -> None:
    info = parse_rate_limit_headers(headers, now_s)
    assert info.dialect in {"selam", "openai", "ietf", "anthropic", "none"}
    for quota in (info.requests, info.tokens):
        if quota is not None:
            fields = (quota.limit, quota.remaining, quota.reset_s, quota.window_s)
            assert all(_is_wait(v) for v in fields)
            assert any(v is not None for v in fields)
    assert all(p.split(": ", 1)[0] in headers for p in info.problems)
    assert _is_wait(parse_retry_after(headers, now_s))


@FAST
@given(st.text(max_size=60), any_now)
def test_text_parsers_never_raise(text: str, now_s: float) -> None:
    assert _is_wait(parse_duration(text))
    assert _is_wait(parse_reset(text, now_s))
    assert _is_wait(parse_wait_from_message(text))
    assert _is_wait(parse_wait_from_message(f"Please try again in {text}"))


@FAST
@given(st.integers(0, 99), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999))
def test_duration_segments_add_up(h: int, m: int, s: int, ms: int) -> None:
    expected = h * 3600 + m * 60 + s + ms / 1000
    assert parse_duration(f"{h}h{m}m{s}s") == pytest.approx(h * 3600 + m * 60 + s)
    assert parse_duration(f"{h}h{m}m{s + ms / 1000}s") == pytest.approx(expected)
    assert parse_wait_from_message(f"try again in {m}m{s}s") == pytest.approx(m * 60 + s)


@FAST
@given(st.floats(0, 1e9, allow_nan=False))
def test_retry_after_ms_is_milliseconds(ms: float) -> None:
    assert parse_retry_after({"retry-after-ms": repr(ms), "retry-after": "1"}, NOW) == ms / 1000


@FAST
@given(st.integers(1, 10**6), st.integers(0, 10**6), st.integers(0, 10**5), st.integers(1, 10**5))
def test_ietf_structured_round_trip(q: int, r: int, t: int, w: int) -> None:
    headers = {"RateLimit-Policy": f'"p";q={q};w={w}', "RateLimit": f'"p";r={r};t={t}'}
    assert parse_rate_limit_headers(headers, NOW) == RateLimitInfo(
        Quota(q, r, t, w), dialect="ietf"
    )
