"""`runner health`: one cheap request to tell whether the key and the connection work."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
import orjson

from runner.config import endpoint_url
from runner.redact import redact

OK, REFUSED, UNREACHABLE = 0, 4, 5


@dataclass(frozen=True)
class Health:
    """The verdict: an exit code and a one-line reason."""

    code: int
    reason: str


def _verdict(status: int, what: str) -> Health | None:
    if status in (401, 403):
        return Health(REFUSED, f"{what} answered HTTP {status}: the key is refused")
    if status == 200:
        return Health(OK, f"{what} answered 200")
    if status >= 500 or status == 429:
        return Health(UNREACHABLE, f"{what} answered HTTP {status}: the service is not usable now")
    return None


async def check(base_url: str, api_key: str, model: str, timeout_s: float = 15.0) -> Health:
    """GET /models; where a server has no such endpoint, a 1-token chat completion instead."""
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            async with session.get(endpoint_url(base_url, "/models")) as response:
                found = _verdict(response.status, "GET /models")
            if found is not None:
                return found
            body = orjson.dumps(
                {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
            )
            async with session.post(
                endpoint_url(base_url, "/chat/completions"), data=body
            ) as response:
                what = "a 1-token chat completion"
                return _verdict(response.status, what) or Health(
                    REFUSED, f"{what} answered HTTP {response.status} (check --model and the plan)"
                )
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        detail = redact(f"{type(exc).__name__}: {exc}", (api_key,))
        return Health(UNREACHABLE, f"cannot reach {base_url}: {detail}")
