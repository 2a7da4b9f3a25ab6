"""Which requests the response cache may answer, and under which key.

Cacheability rule (`--cache MODE`, default `auto`):

- `off`: nothing is cached.
- Whatever the mode, a request is never cached when it searches the web (a `tools` entry whose
  `type` starts with `web_search`, a `web_search_options` field, or a model whose name contains
  `search`) or asks for several choices (`n` other than 1).
- `always`: every other request is cached.
- `auto`: only deterministic requests are cached: `temperature` set explicitly to 0 (an absent
  temperature means the provider default of 1) and `n` absent or 1. `top_p` does not matter,
  and a `seed` does not make a request with temperature above 0 cacheable.

The key is the SHA-256 of the request body as sent, in canonical JSON (keys sorted at every
level, no whitespace), without the fields that cannot change the answer: `stream`,
`stream_options`, `user`, `metadata` and `store`. Every other field is part of the key. The API
key is not in the body, so it never is.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from typing import Literal, get_args

import orjson

CacheMode = Literal["auto", "always", "off"]
CACHE_MODES: tuple[CacheMode, ...] = get_args(CacheMode)
DEFAULT_MODE: CacheMode = "auto"
DEFAULT_TTL = "30d"

# Fields about delivery, attribution or provider-side storage: the same answer comes back
# whatever they say, so two requests differing only in them share an entry.
IGNORED_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "store"})

_UNIT_S = {"w": 7 * 86_400, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
# ASCII digits only: `\d` would also accept other scripts' digits.
_SECONDS = re.compile(r"[0-9]+")
_DURATION = re.compile(r"(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")


def cache_key(body: Mapping[str, object]) -> str:
    """SHA-256 hex of the canonical JSON of `body` without the fields that cannot matter."""
    kept = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
    return hashlib.sha256(orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)).hexdigest()


def is_cacheable(body: Mapping[str, object], mode: CacheMode) -> bool:
    """Whether the cache may answer `body` under `mode` (the rule is in the module docstring)."""
    if mode == "off" or _searches_web(body) or not _single_choice(body):
        return False
    return mode == "always" or _temperature_is_zero(body)


def _searches_web(body: Mapping[str, object]) -> bool:
    model = body.get("model")
    if isinstance(model, str) and "search" in model.lower():
        return True
    if "web_search_options" in body:
        return True
    tools = body.get("tools")
    if not isinstance(tools, list):
        return False
    # Prefix match: OpenAI also names it `web_search_preview`; a search is never repeatable.
    return any(
        isinstance(t, Mapping) and str(t.get("type", "")).startswith("web_search") for t in tools
    )


def _single_choice(body: Mapping[str, object]) -> bool:
    n = body.get("n")
    return n is None or (_is_number(n) and n == 1)


def _temperature_is_zero(body: Mapping[str, object]) -> bool:
    temperature = body.get("temperature")
    return _is_number(temperature) and temperature == 0


def _is_number(value: object) -> bool:
    # bool is an int in Python, but `"temperature": false` is not a temperature of 0.
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_ttl(text: str) -> float:
    """Seconds from a TTL such as `30d`, `1h30m`, `3600` or `forever` (math.inf)."""
    cleaned = text.strip().lower()
    if cleaned == "forever":
        return math.inf
    if _SECONDS.fullmatch(cleaned):
        seconds = int(cleaned)
    else:
        match = _DURATION.fullmatch(cleaned)
        if not cleaned or match is None:
            raise ValueError(_ttl_problem(text, "is not a duration"))
        seconds = sum(
            int(n) * _UNIT_S[u] for n, u in zip(match.groups(), _UNIT_S, strict=True) if n
        )
    if seconds == 0:
        raise ValueError(_ttl_problem(text, "would keep nothing (use --cache off instead)"))
    return float(seconds)


def _ttl_problem(text: str, why: str) -> str:
    return (
        f"cache TTL {text!r} {why}: give seconds (3600), a duration with units w, d, h, m, s "
        "from largest to smallest (45s, 30m, 12h, 7d, 1w, 1h30m), or 'forever'"
    )
