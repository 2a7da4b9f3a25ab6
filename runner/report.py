"""Plain-text reports: the end-of-run summary and `runner status` / `runner runs`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson

from runner.app import RunReport
from runner.ownership import owner_is_gone
from runner.store.protocol import ErrorEntry, RunRecord

STATE_LABELS = (
    ("pending", "pending"),
    ("running", "running"),
    ("retry", "waiting to retry"),
    ("done", "done"),
    ("failed", "failed"),
)


def _n(value: int) -> str:
    return f"{value:,}"


def counts_line(counts: dict[str, int]) -> str:
    """`100 jobs: 98 done, 2 failed, ...` with every state shown."""
    total = sum(counts.values())
    parts = [f"{_n(counts.get(key, 0))} {label}" for key, label in STATE_LABELS]
    return f"{_n(total)} jobs: " + ", ".join(parts)


def summary(report: RunReport, resume_command: str) -> str:
    """The lines printed when `runner run` ends."""
    run, stats = report.run, report.stats
    verb = "resumed" if report.resumed else "new"
    lines = [
        f"run {run.id} ({verb}): {run.input_path} -> {run.out_path}",
        "  " + counts_line(report.counts),
        f"  this invocation: {_n(stats.sent)} requests sent, {_n(stats.done)} done, "
        f"{_n(stats.failed)} failed, {_n(stats.retried)} retried, "
        f"{_n(stats.rate_limited)} answered 429, {stats.elapsed_s:.1f}s",
        f"  tokens: {_n(report.prompt_tokens)} prompt + {_n(report.completion_tokens)} completion",
    ]
    if report.cost is not None:
        lines.append(f"  cost: ${report.cost:,.4f} (models with a known price)")
    if stats.cache_hits or stats.cache_misses:
        saved = "" if stats.cost_saved is None else f", ${stats.cost_saved:,.4f}"
        lines.append(
            f"  cache: {_n(stats.cache_hits)} hits, {_n(stats.cache_misses)} misses "
            f"(saved {_n(stats.tokens_saved)} tokens{saved})"
        )
    if stats.errors_by_code:
        grouped = ", ".join(f"{code} x{n}" for code, n in sorted(stats.errors_by_code.items()))
        lines.append(f"  errors (every attempt, retried ones too): {grouped}")
    lines.append(f"  results: {run.out_path}")
    if stats.stop is not None:
        lines.append(f"  stopped: {stats.stop.reason}")
        if stats.stop.resume_after_s:
            at = time.strftime(
                "%Y-%m-%d %H:%M:%S", time.localtime(time.time() + stats.stop.resume_after_s)
            )
            lines.append(f"  quota expected back around {at}")
        if stats.stop.kind != "auth":
            lines.append(f"  resume with: {resume_command}")
    elif report.counts.get("failed"):
        lines.append("  some jobs failed for good; their result lines carry the error")
    return "\n".join(lines)


def summary_dict(report: RunReport, code: int, resume_command: str) -> dict[str, object]:
    """The end-of-run summary as data, for --summary-json."""
    run, stats = report.run, report.stats
    stop = stats.stop
    return {
        "run_id": run.id,
        "input": run.input_path,
        "results": run.out_path,
        "resumed": report.resumed,
        "exit_code": code,
        "counts": report.counts,
        "this_invocation": {
            "sent": stats.sent,
            "done": stats.done,
            "failed": stats.failed,
            "retried": stats.retried,
            "rate_limited": stats.rate_limited,
            "elapsed_s": round(stats.elapsed_s, 3),
            "errors_by_code": stats.errors_by_code,
            "cache": {
                "hits": stats.cache_hits,
                "misses": stats.cache_misses,
                "tokens_saved": stats.tokens_saved,
                "cost_saved_usd": stats.cost_saved,
            },
        },
        "tokens": {"prompt": report.prompt_tokens, "completion": report.completion_tokens},
        "cost_usd": report.cost,
        "stopped": None if stop is None else {"kind": stop.kind, "reason": stop.reason},
        "resume_command": resume_command if stop is not None and stop.kind != "auth" else None,
    }


def _run_state(run: RunRecord) -> str:
    if run.owner and owner_is_gone(run.owner, run.heartbeat_at, time.time()):
        return "interrupted (its process is gone; run the same command to resume)"
    if run.state == "ingesting":
        return "queueing"
    if run.owner:
        return f"running (owner {run.owner})"
    if run.stop_reason:
        return f"stopped: {run.stop_reason}"
    return "finished" if run.finished_at else "waiting (run the same command to send)"


def _limits_lines(limits_json: str | None) -> list[str]:
    if not limits_json:
        return []
    data: dict[str, Any] = orjson.loads(limits_json)
    lines = []
    if data.get("at"):
        lines.append("  limits as of " + time.strftime("%H:%M:%S", time.localtime(data["at"])))
    for name in ("requests", "tokens"):
        budget = data.get(name) or {}
        if budget.get("limit") is None and budget.get("ceiling_per_min") is None:
            continue
        window = budget.get("window_s") or 60.0
        pace = budget.get("pace_per_min")
        limit = budget.get("limit")
        shown = "unknown" if limit is None else f"{limit:g}"
        text = f"  {name}: limit {shown} per {window:g}s"
        if budget.get("remaining") is not None:
            text += f", {budget['remaining']:g} remaining"
        if budget.get("reset_in_s") is not None:
            text += f", resets in {budget['reset_in_s']:.1f}s"
        if pace is not None:
            text += f", pacing at {pace:.1f}/min"
        lines.append(text)
    lines.append(
        f"  429s waited out: {data.get('rate_limited', 0)}; limits from {data.get('learning')}"
    )
    stats = data.get("stats") or {}
    if stats:
        lines.append(
            f"  achieved: {stats.get('requests_per_min', 0):,.1f} requests/min, "
            f"{stats.get('tokens_per_min', 0):,.0f} tokens/min"
        )
    if data.get("paused_reason"):
        lines.append(f"  paused: {data['paused_reason']} ({data['paused_for_s']:.0f}s left)")
    return lines


def status_text(
    run: RunRecord,
    counts: dict[str, int],
    usage: tuple[int, int],
    errors: list[ErrorEntry],
    kinds: Sequence[tuple[str, int, ErrorEntry]] = (),
) -> str:
    """`runner status RUN`."""
    lines = [
        f"run {run.id}: {run.input_path} -> {run.out_path}",
        f"  state: {_run_state(run)}",
        "  " + counts_line(counts),
        f"  tokens: {_n(usage[0])} prompt + {_n(usage[1])} completion",
        f"  active time: {run.active_s:.1f}s; created "
        + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.created_at)),
    ]
    lines.extend(_limits_lines(run.limits_json))
    if kinds:
        lines.append("  errors by kind (attempts, newest example):")
        for code, count, (_, status, _, message) in kinds:
            shown = f"HTTP {status} " if status else ""
            lines.append(f"    {code} x{count}: {shown}{message[:140]}")
    if errors:
        lines.append("  last errors:")
        for at, status, code, message in errors:
            when = time.strftime("%H:%M:%S", time.localtime(at))
            shown = f"HTTP {status} " if status else ""
            lines.append(f"    {when} {shown}{code}: {message[:160]}")
    return "\n".join(lines)


def runs_line(run: RunRecord, counts: dict[str, int]) -> str:
    """One line of `runner runs`."""
    done, failed = counts.get("done", 0), counts.get("failed", 0)
    return (
        f"{run.id:>4}  {_run_state(run)[:40]:<40}  {done:>8} done {failed:>6} failed "
        f"of {run.total_jobs:<8}  {run.input_path} -> {run.out_path}"
    )
