"""Prices per model, for cost so far, projected cost and --max-cost.

No prices ship for the Selam models (none are published); without a price a model's usage is
counted in tokens only. Prices come from a TOML or JSON file (`--prices FILE`):

    [selam-plus]                       {"selam-plus": {"input_per_1m": 0.5,
    input_per_1m = 0.5                                 "output_per_1m": 1.5}}
    output_per_1m = 1.5

or from flags: `--price selam-plus=0.5/1.5` (USD per million input / output tokens).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runner.errors import UsageError


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input_per_1m: float
    output_per_1m: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """What this many tokens cost."""
        return (prompt_tokens * self.input_per_1m + completion_tokens * self.output_per_1m) / 1e6


@dataclass(frozen=True)
class PriceTable:
    """Prices by model id."""

    prices: Mapping[str, Price] = field(default_factory=dict)

    def price(self, model: str) -> Price | None:
        """The model's price, if known."""
        return self.prices.get(model)

    def cost(self, usage: Mapping[str, tuple[int, int]]) -> float | None:
        """Total cost of per-model (prompt, completion) usage; None if no model is priced."""
        total, priced = 0.0, False
        for model, (prompt, completion) in usage.items():
            price = self.price(model)
            if price is not None:
                total += price.cost(prompt, completion)
                priced = True
        return total if priced else None

    @classmethod
    def load(cls, path: Path | None, overrides: Iterable[str] = ()) -> PriceTable:
        """Prices from a TOML/JSON file, then `MODEL=IN/OUT` overrides."""
        prices: dict[str, Price] = {}
        if path is not None:
            prices.update(_from_file(path))
        for text in overrides:
            model, price = _parse_override(text)
            prices[model] = price
        return cls(prices)


def _from_file(path: Path) -> dict[str, Price]:
    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read prices ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a table of models")
    prices = {}
    for model, entry in data.items():
        try:
            prices[model] = Price(float(entry["input_per_1m"]), float(entry["output_per_1m"]))
        except (KeyError, TypeError, ValueError):
            raise UsageError(
                f"{path}: model {model!r} needs numbers input_per_1m and output_per_1m"
            ) from None
    return prices


def _parse_override(text: str) -> tuple[str, Price]:
    model, _, numbers = text.partition("=")
    inp, _, out = numbers.partition("/")
    try:
        return model.strip(), Price(float(inp), float(out))
    except ValueError:
        raise UsageError(
            f"--price {text!r}: expected MODEL=INPUT/OUTPUT in USD per 1M tokens"
        ) from None
