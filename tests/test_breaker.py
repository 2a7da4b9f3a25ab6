"""CircuitBreaker: consecutive failures trip it; cool-downs double up to a cap; success resets."""

from __future__ import annotations

import pytest

from runner.breaker import CircuitBreaker


def trip(breaker: CircuitBreaker) -> float | None:
    """Fail until the breaker answers with a pause (or `threshold` times)."""
    pause = None
    for _ in range(breaker.threshold):
        pause = breaker.failure()
    return pause


def test_failures_below_the_threshold_ask_for_no_pause() -> None:
    breaker = CircuitBreaker(threshold=8)
    assert [breaker.failure() for _ in range(7)] == [None] * 7
    assert breaker.consecutive == 7


def test_the_threshold_th_failure_trips_with_the_base_cool_down() -> None:
    breaker = CircuitBreaker(threshold=8, cool_down_s=5.0)
    assert trip(breaker) == 5.0
    assert (breaker.consecutive, breaker.trips) == (0, 1)


def test_counting_starts_over_after_a_trip() -> None:
    breaker = CircuitBreaker(threshold=3)
    trip(breaker)
    assert [breaker.failure(), breaker.failure()] == [None, None]
    assert breaker.failure() is not None


def test_cool_down_doubles_per_trip_up_to_the_cap() -> None:
    breaker = CircuitBreaker(threshold=2, cool_down_s=5.0, max_cool_down_s=60.0)
    assert [trip(breaker) for _ in range(7)] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0, 60.0]


def test_success_between_failures_resets_the_count() -> None:
    breaker = CircuitBreaker(threshold=3)
    breaker.failure()
    breaker.failure()
    breaker.success()
    assert [breaker.failure(), breaker.failure()] == [None, None]
    assert breaker.consecutive == 2


def test_success_after_trips_brings_back_the_base_cool_down() -> None:
    breaker = CircuitBreaker(threshold=2, cool_down_s=5.0)
    trip(breaker)
    trip(breaker)
    breaker.success()
    assert breaker.trips == 0
    assert trip(breaker) == 5.0


@pytest.mark.parametrize(
    ("threshold", "failures", "pauses"),
    [
        pytest.param(1, 3, [5.0, 10.0, 20.0], id="threshold-one-trips-every-failure"),
        pytest.param(4, 9, [5.0, 10.0], id="threshold-four"),
    ],
)
def test_pauses_for_a_run_of_failures(threshold: int, failures: int, pauses: list[float]) -> None:
    breaker = CircuitBreaker(threshold=threshold, cool_down_s=5.0)
    got = [p for p in (breaker.failure() for _ in range(failures)) if p is not None]
    assert got == pauses


def test_cool_down_stays_capped_through_a_long_outage() -> None:
    """Thousands of trips (an outage overnight) keep answering the cap, never overflow."""
    breaker = CircuitBreaker(threshold=1, cool_down_s=5.0, max_cool_down_s=60.0)
    pauses = [breaker.failure() for _ in range(1100)]
    assert pauses[-1] == 60.0
    assert set(pauses[4:]) == {60.0}
