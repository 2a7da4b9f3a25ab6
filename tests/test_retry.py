"""RetryPolicy: full-jitter backoff, the server's wait, and both retry budgets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.retry import RetryPolicy

FAST = settings(max_examples=150, deadline=None, database=None)
POLICY = RetryPolicy(max_retries=5, base_s=0.5, cap_s=60.0, max_rate_limited=30)
jitters = st.floats(0.0, 1.0, exclude_max=True)


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [
        pytest.param(1, 0.5, id="first-retry-base"),
        pytest.param(2, 1.0, id="second-doubles"),
        pytest.param(4, 4.0, id="fourth"),
        pytest.param(7, 32.0, id="seventh-below-cap"),
        pytest.param(8, 60.0, id="eighth-capped"),
        pytest.param(100, 60.0, id="hundredth-capped"),
        pytest.param(0, 0.5, id="attempt-zero-treated-as-first"),
    ],
)
def test_backoff_ceiling_doubles_from_base_up_to_cap(attempt: int, ceiling: float) -> None:
    assert POLICY.backoff_s(attempt, 0.0) == 0.0
    assert POLICY.backoff_s(attempt, 0.5) == pytest.approx(ceiling / 2)
    assert POLICY.backoff_s(attempt, 0.999999) == pytest.approx(ceiling, rel=1e-5)


@FAST
@given(st.integers(1, 200), jitters)
def test_backoff_is_full_jitter_within_zero_and_the_capped_ceiling(
    attempt: int, jitter: float
) -> None:
    delay = POLICY.backoff_s(attempt, jitter)
    ceiling = min(POLICY.cap_s, POLICY.base_s * 2 ** (attempt - 1))
    assert 0.0 <= delay <= ceiling
    assert delay == pytest.approx(ceiling * jitter)


@FAST
@given(st.integers(1, 100), jitters, jitters)
def test_backoff_grows_with_jitter(attempt: int, a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert POLICY.backoff_s(attempt, low) <= POLICY.backoff_s(attempt, high)


def test_delay_without_server_wait_is_the_backoff() -> None:
    assert POLICY.delay_s(3, 0.25, None) == POLICY.backoff_s(3, 0.25) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("server_wait_s", "jitter", "expected"),
    [
        pytest.param(20.0, 0.0, 20.0, id="exact-wait-at-zero-jitter"),
        pytest.param(20.0, 0.5, 21.0, id="spread-up-to-ten-percent"),
        pytest.param(0.0, 0.9, 0.0, id="zero-wait-means-now"),
        pytest.param(300.0, 0.0, 300.0, id="longer-than-cap-honoured"),
    ],
)
def test_delay_honours_the_server_wait(
    server_wait_s: float, jitter: float, expected: float
) -> None:
    assert POLICY.delay_s(6, jitter, server_wait_s) == pytest.approx(expected)


@FAST
@given(st.integers(1, 30), jitters, st.floats(0.0, 1e5))
def test_delay_is_never_shorter_than_the_server_wait(
    attempt: int, jitter: float, server_wait_s: float
) -> None:
    delay = POLICY.delay_s(attempt, jitter, server_wait_s)
    assert server_wait_s <= delay <= server_wait_s * 1.1


@pytest.mark.parametrize(
    ("policy", "attempts_made", "rate_limited", "gives_up"),
    [
        pytest.param(POLICY, 1, False, False, id="first-failure-retries"),
        pytest.param(POLICY, 5, False, False, id="five-made-one-retry-left"),
        pytest.param(POLICY, 6, False, True, id="first-try-plus-max-retries-gives-up"),
        pytest.param(POLICY, 6, True, False, id="rate-limited-has-its-own-budget"),
        pytest.param(POLICY, 30, True, False, id="thirty-rate-limited-still-retries"),
        pytest.param(POLICY, 31, True, True, id="rate-limited-budget-spent"),
        pytest.param(RetryPolicy(max_retries=0), 1, False, True, id="no-retries"),
        pytest.param(RetryPolicy(max_rate_limited=0), 1, True, True, id="no-rate-limited-retries"),
        pytest.param(RetryPolicy(max_retries=2), 3, False, True, id="custom-budget-spent"),
        pytest.param(RetryPolicy(max_retries=2), 2, False, False, id="custom-budget-left"),
    ],
)
def test_gives_up_boundaries(
    policy: RetryPolicy, attempts_made: int, rate_limited: bool, gives_up: bool
) -> None:
    assert policy.gives_up(attempts_made, rate_limited) is gives_up


def test_defaults_match_the_documented_budgets() -> None:
    policy = RetryPolicy()
    assert (policy.max_retries, policy.base_s, policy.cap_s, policy.max_rate_limited) == (
        5,
        0.5,
        60.0,
        30,
    )
