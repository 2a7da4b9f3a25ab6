"""`runner run --dry-run`: validate a job file and estimate its size without sending anything."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson

from runner.errors import InputError, InputProblem
from runner.jobfile import LineError, iter_lines, new_digest, parse_line
from runner.pricing import PriceTable
from runner.tokens import completion_cap, estimate_prompt_tokens


@dataclass
class ModelEstimate:
    """What the jobs of one model may cost."""

    jobs: int = 0
    prompt_tokens: int = 0
    max_completion_tokens: int = 0


@dataclass
class Estimate:
    """A job file's size before anything is sent."""

    path: Path
    jobs: int = 0
    by_model: dict[str, ModelEstimate] = field(default_factory=dict)

    def cost_bound(self, prices: PriceTable) -> float | None:
        """An upper bound on cost: every prompt plus every completion at its cap."""
        usage = {m: (e.prompt_tokens, e.max_completion_tokens) for m, e in self.by_model.items()}
        return prices.cost(usage)


def estimate(path: Path, max_line_bytes: int) -> Estimate:
    """Read the whole file once; raise InputError (with every bad line) if any line is bad."""
    result = Estimate(path)
    problems: list[InputProblem] = []
    seen: dict[str, int] = {}
    for number, raw in iter_lines(path, new_digest(), max_line_bytes):
        if raw is None:
            problems.append(InputProblem(str(path), number, "line is over the size limit"))
            continue
        try:
            job = parse_line(raw, number)
        except LineError as exc:
            problems.append(InputProblem(str(path), number, str(exc)))
            continue
        if job is None:
            continue
        if job.custom_id in seen:
            reason = f"duplicate custom_id {job.custom_id!r} (first on line {seen[job.custom_id]})"
            problems.append(InputProblem(str(path), number, reason))
            continue
        seen[job.custom_id] = number
        _add(result, orjson.loads(job.body))
    if problems:
        raise InputError(problems[:20], max(0, len(problems) - 20))
    return result


def _add(result: Estimate, body: dict[str, object]) -> None:
    model = str(body.get("model"))
    entry = result.by_model.setdefault(model, ModelEstimate())
    entry.jobs += 1
    entry.prompt_tokens += estimate_prompt_tokens(body.get("messages"))
    entry.max_completion_tokens += completion_cap(body)
    result.jobs += 1


def describe(result: Estimate, prices: PriceTable) -> str:
    """The dry run's report."""
    lines = [f"{result.path}: {result.jobs:,} jobs, nothing sent (dry run)"]
    for model, e in sorted(result.by_model.items()):
        price = prices.price(model)
        cost = (
            "no price known"
            if price is None
            else (f"at most ${price.cost(e.prompt_tokens, e.max_completion_tokens):,.4f}")
        )
        lines.append(
            f"  {model}: {e.jobs:,} jobs, ~{e.prompt_tokens:,} prompt tokens, "
            f"up to {e.max_completion_tokens:,} completion tokens ({cost})"
        )
    total = result.cost_bound(prices)
    if total is not None:
        unpriced = sorted(m for m in result.by_model if prices.price(m) is None)
        note = f" (not counting {', '.join(unpriced)}: no price)" if unpriced else ""
        lines.append(f"  estimated cost: at most ${total:,.4f}{note}")
    return "\n".join(lines)
