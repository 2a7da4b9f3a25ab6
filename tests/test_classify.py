"""classify(): one table of (status, headers, body) -> verdict, plus totality."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.classify import Kind, Verdict, classify

NOW = 1_700_000_000.0
MAX_WAIT_S = 120.0
FAST = settings(max_examples=200, deadline=None, database=None)

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def error(code: str | int | None = None, typ: str | None = None, message: str = "") -> bytes:
    inner: dict[str, object] = {"message": message}
    if typ is not None:
        inner["type"] = typ
    if code is not None:
        inner["code"] = code
    return orjson.dumps({"error": inner})


def verdict(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Verdict:
    return classify(status, headers or {}, body, NOW, MAX_WAIT_S)


def test_200_with_choices_is_ok_and_carries_the_parsed_body() -> None:
    result = verdict(200, orjson.dumps(COMPLETION))
    assert result.kind is Kind.OK
    assert result.parsed == COMPLETION
    assert result.code is None


@pytest.mark.parametrize(
    ("body", "kind", "code"),
    [
        pytest.param(
            error("server_error", "server_error", "The server had an error"),
            Kind.TRANSIENT,
            "server_error",
            id="error-object-server-error",
        ),
        pytest.param(
            error("rate_limit_exceeded", "rate_limit_error", "Slow down"),
            Kind.RATE_LIMITED,
            "rate_limit_exceeded",
            id="error-object-rate-limit",
        ),
        pytest.param(
            error("content_policy_violation", "invalid_request_error", "Refused"),
            Kind.FAILED,
            "content_policy_violation",
            id="error-object-other-code",
        ),
        pytest.param(
            orjson.dumps({"error": "overloaded"}), Kind.TRANSIENT, "overloaded", id="error-string"
        ),
        pytest.param(
            orjson.dumps({**COMPLETION, "error": {"code": "server_error", "message": "x"}}),
            Kind.TRANSIENT,
            "server_error",
            id="choices-and-error-code",
        ),
        pytest.param(
            orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion"}),
            Kind.FAILED,
            "invalid_response",
            id="no-choices",
        ),
        pytest.param(
            orjson.dumps({**COMPLETION, "choices": None}),
            Kind.FAILED,
            "invalid_response",
            id="choices-null",
        ),
        pytest.param(b"<html>Bad gateway</html>", Kind.TRANSIENT, "invalid_response", id="html"),
        pytest.param(b"", Kind.TRANSIENT, "invalid_response", id="empty-body"),
        pytest.param(b'{"choices": [', Kind.TRANSIENT, "invalid_response", id="truncated-json"),
    ],
)
def test_200_that_is_not_a_completion_is_classified_by_its_inner_code(
    body: bytes, kind: Kind, code: str
) -> None:
    result = verdict(200, body)
    assert (result.kind, result.code) == (kind, code)


def test_200_with_rate_limit_code_uses_the_server_wait() -> None:
    body = error("rate_limit_exceeded", message="Please try again in 3s")
    result = verdict(200, body)
    assert (result.kind, result.wait_s) == (Kind.RATE_LIMITED, 3.0)


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        pytest.param(
            400,
            error("missing_parameter", "invalid_request_error", "messages is required"),
            "missing_parameter",
            id="400",
        ),
        pytest.param(
            403, error("model_not_allowed", "permission_error"), "model_not_allowed", id="403"
        ),
        pytest.param(404, b"Not Found", "http_404", id="404-plain-text"),
        pytest.param(
            413,
            error("character_limit_exceeded", "invalid_request_error", "too long"),
            "character_limit_exceeded",
            id="413",
        ),
        pytest.param(
            422, error(typ="invalid_request_error"), "invalid_request_error", id="422-type-only"
        ),
    ],
)
def test_client_errors_fail_the_job_for_good(status: int, body: bytes, code: str) -> None:
    result = verdict(status, body)
    assert (result.kind, result.code) == (Kind.FAILED, code)


def test_failed_verdict_keeps_the_message_and_parsed_error_body() -> None:
    body = error("missing_parameter", "invalid_request_error", "messages is required")
    result = verdict(400, body)
    assert result.message == "messages is required"
    assert result.parsed == orjson.loads(body)


def test_failed_verdict_of_a_non_json_body_quotes_the_body_as_message() -> None:
    result = verdict(404, b"Not Found")
    assert (result.message, result.parsed) == ("Not Found", None)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        pytest.param(401, error("invalid_api_key", "authentication_error", "bad key"), id="401"),
        pytest.param(401, b"", id="401-empty-body"),
        pytest.param(400, error("invalid_api_key", "invalid_request_error"), id="400-invalid-key"),
        pytest.param(403, error("invalid_api_key"), id="403-invalid-key"),
        pytest.param(200, error("invalid_api_key"), id="200-invalid-key"),
    ],
)
def test_refused_key_is_auth(status: int, body: bytes) -> None:
    assert verdict(status, body).kind is Kind.AUTH


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503, 504, 520, 529, 599])
def test_server_and_timeout_statuses_are_transient(status: int) -> None:
    result = verdict(status, b"upstream trouble")
    assert (result.kind, result.code, result.wait_s) == (Kind.TRANSIENT, f"http_{status}", None)


def test_503_with_retry_after_carries_the_wait() -> None:
    result = verdict(503, b"", {"Retry-After": "30"})
    assert (result.kind, result.wait_s) == (Kind.TRANSIENT, 30.0)


def test_503_with_a_retry_after_past_max_wait_is_quota() -> None:
    result = verdict(503, b"", {"Retry-After": "3600"})
    assert (result.kind, result.wait_s) == (Kind.QUOTA, 3600.0)


def test_429_rate_limit_with_retry_after_is_rate_limited_with_that_wait() -> None:
    body = error("rate_limit_exceeded", "rate_limit_error", "Rate limit exceeded")
    result = verdict(429, body, {"Retry-After": "20"})
    assert result == Verdict(Kind.RATE_LIMITED, "rate_limit_exceeded", "Rate limit exceeded", 20.0)


def test_429_without_any_wait_is_rate_limited_with_no_wait() -> None:
    result = verdict(429, error("rate_limit_exceeded"))
    assert (result.kind, result.wait_s) == (Kind.RATE_LIMITED, None)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            error(
                "insufficient_quota",
                "insufficient_quota",
                "You exceeded your current quota, please check your plan and billing details.",
            ),
            id="openai-insufficient-quota",
        ),
        pytest.param(
            error(None, "insufficient_quota", "Out of credits"), id="insufficient-quota-type-only"
        ),
        pytest.param(
            error("daily_limit_exceeded", "rate_limit_error", "Limit reached"),
            id="daily-limit-code",
        ),
        pytest.param(
            error(
                429,
                message="Quota exceeded for metric: generate_requests_per_day, limit: 100",
            ),
            id="quota-per-day-message",
        ),
        pytest.param(
            orjson.dumps(
                {
                    "error": {
                        "code": 429,
                        "message": "Resource has been exhausted.",
                        "status": "RESOURCE_EXHAUSTED",
                    }
                }
            ),
            id="google-status-resource-exhausted",
        ),
        pytest.param(
            error("RESOURCE_EXHAUSTED", message="Try later"), id="resource-exhausted-code"
        ),
    ],
)
def test_429_that_names_a_spent_quota_is_quota(body: bytes) -> None:
    assert verdict(429, body, {"Retry-After": "5"}).kind is Kind.QUOTA


def test_429_with_a_retry_after_of_days_is_quota_not_a_long_sleep() -> None:
    result = classify(
        429, {"retry-after": "277403"}, error("rate_limit_exceeded"), NOW, max_wait_s=120.0
    )
    assert (result.kind, result.wait_s) == (Kind.QUOTA, 277403.0)


def test_429_wait_at_max_wait_is_still_a_rate_limit() -> None:
    result = classify(429, {"retry-after": "120"}, b"", NOW, max_wait_s=120.0)
    assert (result.kind, result.wait_s) == (Kind.RATE_LIMITED, 120.0)


def test_429_wait_from_the_message_when_no_header_gives_one() -> None:
    body = error("rate_limit_exceeded", message="Rate limit reached. Please try again in 7.5s.")
    result = verdict(429, body)
    assert (result.kind, result.wait_s) == (Kind.RATE_LIMITED, 7.5)


def test_429_selam_headers_remaining_zero_give_the_reset_after_wait() -> None:
    headers = {
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset-After": "12",
    }
    body = error("rate_limit_exceeded", message="Rate limit exceeded")
    result = verdict(429, body, headers)
    assert (result.kind, result.wait_s) == (Kind.RATE_LIMITED, 12.0)


def test_429_retry_after_beats_the_wait_in_the_message() -> None:
    body = error("rate_limit_exceeded", message="Please try again in 60 seconds")
    assert verdict(429, body, {"Retry-After": "4"}).wait_s == 4.0


def test_429_plain_text_body_keeps_the_text_as_message() -> None:
    result = verdict(429, b"Too Many Requests")
    assert (result.kind, result.code, result.message) == (
        Kind.RATE_LIMITED,
        "http_429",
        "Too Many Requests",
    )


header_names = st.sampled_from(
    [
        "Retry-After",
        "retry-after-ms",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "X-RateLimit-Reset-After",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-tokens",
        "RateLimit",
        "RateLimit-Policy",
        "Content-Type",
    ]
) | st.text(max_size=20)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
error_bodies = st.builds(
    # The standard encoder also writes what orjson refuses (NaN, huge integers): more to survive.
    lambda inner, extra: json.dumps({"error": inner, **extra}).encode(),
    st.dictionaries(
        st.sampled_from(["type", "code", "message", "status"]), json_scalars, max_size=4
    )
    | json_scalars,
    st.dictionaries(st.sampled_from(["choices", "id", "usage"]), json_scalars, max_size=2),
)


@FAST
@given(
    st.integers(100, 599),
    st.dictionaries(header_names, st.text(max_size=40), max_size=6),
    st.binary(max_size=200) | error_bodies,
    st.floats(0, 10_000, allow_nan=False),
)
def test_classify_never_raises(
    status: int, headers: dict[str, str], body: bytes, max_wait_s: float
) -> None:
    result = classify(status, headers, body, NOW, max_wait_s)
    assert isinstance(result.kind, Kind)
    if result.kind is not Kind.OK:
        assert result.code
    if result.wait_s is not None:
        assert result.wait_s >= 0
