"""Watching a run: spending caps (tokens, cost, run time) and the progress snapshots."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from runner.attempt import StopRequest
from runner.pricing import PriceTable
from runner.progress import Progress
from runner.store.protocol import Outcome


@dataclass(frozen=True)
class Caps:
    """Limits on what one run may spend; reaching one stops dispatch (exit 3, resumable)."""

    max_tokens: int | None = None
    max_cost: float | None = None
    max_runtime_s: float | None = None


@dataclass
class Baseline:
    """The run as it stood when this invocation started."""

    total: int
    done: int = 0
    failed: int = 0
    retrying: int = 0
    usage: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass
class Live:
    """What the engine knows right now, handed to `RunWatch.progress`."""

    done: int
    failed: int
    retried: int
    requeued: int
    in_flight: int
    queued: int
    sent: int
    rate_limited: int
    elapsed_s: float
    paused: str | None
    stopping: str | None


class RunWatch:
    """Tracks usage by model against the caps, and builds progress snapshots."""

    def __init__(self, caps: Caps, prices: PriceTable, baseline: Baseline) -> None:
        self.caps = caps
        self.prices = prices
        self.baseline = baseline
        self.usage: dict[str, tuple[int, int]] = dict(baseline.usage)

    @property
    def tokens(self) -> int:
        """Tokens used by the run so far, all invocations."""
        return sum(p + c for p, c in self.usage.values())

    def cost(self) -> float | None:
        """Cost so far, when any model in use is priced."""
        return self.prices.cost(self.usage)

    def record(self, outcomes: Iterable[Outcome], models: Mapping[int, str]) -> StopRequest | None:
        """Add the outcomes' usage; return a stop when a cap is reached."""
        for outcome in outcomes:
            if outcome.prompt_tokens or outcome.completion_tokens:
                model = models.get(outcome.job_id, "")
                prompt, completion = self.usage.get(model, (0, 0))
                self.usage[model] = (
                    prompt + outcome.prompt_tokens,
                    completion + outcome.completion_tokens,
                )
        return self.over_budget()

    def over_budget(self) -> StopRequest | None:
        """A stop when the run's usage so far has reached --max-tokens or --max-cost."""
        caps = self.caps
        if caps.max_tokens is None and caps.max_cost is None:
            return None
        if caps.max_tokens is not None and self.tokens >= caps.max_tokens:
            return StopRequest(
                "budget", f"--max-tokens {caps.max_tokens:,} reached ({self.tokens:,} used)"
            )
        cost = self.cost()
        if caps.max_cost is not None and cost is not None and cost >= caps.max_cost:
            return StopRequest(
                "budget", f"--max-cost {caps.max_cost:g} reached (${cost:.4f} spent)"
            )
        return None

    def over_runtime(self, elapsed_s: float) -> StopRequest | None:
        """A stop once --max-runtime has passed."""
        limit = self.caps.max_runtime_s
        if limit is not None and elapsed_s >= limit:
            return StopRequest("runtime", f"--max-runtime {limit:g}s reached")
        return None

    def progress(self, live: Live) -> Progress:
        """A snapshot for the display."""
        base = self.baseline
        done, failed = base.done + live.done, base.failed + live.failed
        retrying = max(0, base.retrying + live.retried - live.requeued)
        minutes = max(live.elapsed_s / 60.0, 1e-9)
        finished_now = live.done + live.failed
        remaining = base.total - done - failed
        eta = remaining / (finished_now / live.elapsed_s) if finished_now else None
        cost = self.cost()
        projected = None
        if cost is not None and done + failed:
            projected = cost * base.total / (done + failed)
        return Progress(
            total=base.total,
            done=done,
            failed=failed,
            retrying=retrying,
            in_flight=live.in_flight,
            queued=live.queued,
            sent=live.sent,
            rate_limited=live.rate_limited,
            requests_per_min=live.sent / minutes,
            tokens_per_min=(self.tokens - _tokens(base.usage)) / minutes,
            tokens=self.tokens,
            cost=cost,
            projected_cost=projected,
            elapsed_s=live.elapsed_s,
            eta_s=eta,
            paused=live.paused,
            stopping=live.stopping,
        )


def _tokens(usage: Mapping[str, tuple[int, int]]) -> int:
    return sum(p + c for p, c in usage.values())
