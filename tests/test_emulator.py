"""The emulator over real loopback HTTP, with a FakeClock so windows expire without sleeping."""

from __future__ import annotations

import copy
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDictProxy

from runner.clock import FakeClock
from runner.emulator import (
    EmulatorConfig,
    Script,
    count_prompt_tokens,
    make_reply,
    parse_script,
    serve_emulator,
)
from runner.emulator_headers import RateWindow, format_duration
from runner.tokens import estimate_prompt_tokens

START_S = 1_000.0  # FakeClock's monotonic start
WALL_S = 1_700_001_000  # FakeClock's time() at START_S
HI = [{"role": "user", "content": "hi"}]
BAD = "invalid_request"
QUOTA = "You exceeded your current quota, please check your plan and billing details."


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    raw: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.raw)


@dataclass
class Api:
    session: aiohttp.ClientSession
    base: str
    clock: FakeClock

    async def post(self, body: object, key: str | None = None) -> Reply:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        url = f"{self.base}/chat/completions"
        async with self.session.post(url, data=data, headers=headers) as r:
            return Reply(r.status, r.headers, await r.read())

    async def chat(self, content: str = "Hello there", **fields: Any) -> Reply:
        body = {"model": "selam-turbo", "messages": [{"role": "user", "content": content}]}
        return await self.post(body | fields)

    async def get(self, path: str) -> Any:
        async with self.session.get(self.base.removesuffix("/v1") + path) as r:
            return await r.json()


@asynccontextmanager
async def api(**config: Any) -> AsyncIterator[Api]:
    clock = FakeClock(start_s=START_S)
    async with (
        serve_emulator(EmulatorConfig(**config), clock=clock) as (_, base),
        aiohttp.ClientSession() as session,
    ):
        yield Api(session, base, clock)


def sse_events(raw: bytes) -> list[str]:
    return [line.removeprefix("data: ") for line in raw.decode().split("\n\n") if line]


# --- a normal answer ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_completion_has_openai_shape_and_rule_usage() -> None:
    async with api() as a:
        r = await a.chat("Hello there")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert re.fullmatch(r"req_\d+", r.headers["x-request-id"])
    body = r.json
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{24}", body["id"])
    assert (body["object"], body["model"]) == ("chat.completion", "selam-turbo")
    assert body["created"] == WALL_S
    (choice,) = body["choices"]
    reply = "Echo: Hello there (emulated reply)"
    assert choice["message"] == {"role": "assistant", "content": reply}
    assert choice["finish_reason"] == "stop"
    # 11 chars → 3 + 4 framing; the 34-char reply → 9.
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16}


def test_token_rule_counts_text_parts_and_framing() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},  # 9 chars → 3 + 4
        {"role": "user", "content": [{"type": "text", "text": "ab"}, {"type": "image_url"}]},
        {"role": "assistant", "content": None},  # 0 + 4
        {"role": "user", "content": "ሰላም ዓለም"},  # 8 code points → 2 + 4
    ]
    assert count_prompt_tokens(messages) == 7 + 5 + 4 + 6
    assert count_prompt_tokens(messages) == estimate_prompt_tokens(messages)  # runner agrees
    assert make_reply("x" * 500, None)[0] == "Echo: " + "x" * 200 + " (emulated reply)"


@pytest.mark.anyio
async def test_max_tokens_cuts_the_reply_with_finish_reason_length() -> None:
    async with api() as a:
        body = (await a.chat("Hello there", max_tokens=3)).json
    assert body["choices"][0]["message"]["content"] == "Echo: Hello "
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3


@pytest.mark.anyio
async def test_same_body_gets_same_id_and_content() -> None:
    async with api() as a:
        first, again = (await a.chat("same")).json, (await a.chat("same")).json
        other = (await a.chat("same", temperature=0.2)).json
    assert first == again
    assert other["id"] != first["id"]
    assert other["choices"] == first["choices"]


# --- errors before admission ------------------------------------------------------------------


@pytest.mark.anyio
async def test_wrong_key_gets_401_and_is_never_echoed() -> None:
    secret = "sk-selam-presented-secret-42"
    body = {"model": "selam-turbo", "messages": [{"role": "user", "content": "hi"}]}
    async with api(api_key="sk-selam-right", limit_requests=5) as a:
        wrong, none = await a.post(body, key=secret), await a.post(body)
        right = await a.post(body, key="sk-selam-right")
    for r in (wrong, none):
        assert r.status == 401
        assert r.json == {
            "error": {
                "message": "Invalid API key provided.",
                "type": "authentication_error",
                "code": "invalid_api_key",
            }
        }
    assert secret not in wrong.raw.decode()
    assert all(secret not in value for value in wrong.headers.values())
    assert wrong.headers["X-RateLimit-Remaining"] == "5"  # refused requests use no quota
    assert right.status == 200


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        ({"model": "selam-turbo"}, 400, "missing_parameter"),
        ({"model": "selam-turbo", "messages": []}, 400, "missing_parameter"),
        ({"messages": HI}, 400, "missing_parameter"),
        ({"model": "missing-model", "messages": HI}, 404, "model_not_found"),
        ({"model": "m", "messages": [{"role": "user", "content": "[emulate bogus]"}]}, 400, BAD),
        ({"model": "m", "messages": HI, "max_tokens": -1}, 400, BAD),
    ],
)
async def test_bad_requests_get_selam_error_bodies(body: object, status: int, code: str) -> None:
    async with api() as a:
        r = await a.post(body)
    assert r.status == status
    assert r.json["error"]["code"] == code
    assert r.json["error"]["type"] == "invalid_request_error"


# --- scripting ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_scripted_statuses_follow_arrivals_of_the_same_body() -> None:
    async with api(limit_requests=10) as a:
        statuses = [(await a.chat("[emulate status=500,200] hi")).status for _ in range(3)]
        other_body = await a.chat("[emulate status=500,200] hi", temperature=0)
        first = await a.chat("[emulate status=503] again")
        stats = await a.get("/emulator/stats")
    assert statuses == [500, 200, 200]
    assert other_body.status == 500
    assert first.json["error"]["type"] == "server_error"
    assert first.headers["Retry-After"] == "1"
    assert stats["admitted"] == 5  # scripted answers still fill the window
    assert stats["by_status"] == {"200": 2, "500": 2, "503": 1}


@pytest.mark.anyio
async def test_scripted_429_uses_given_retry_after() -> None:
    async with api() as a:
        r = await a.chat("[emulate status=429 retry_after=7] hi")
    assert r.status == 429
    assert r.json["error"]["code"] == "rate_limit_exceeded"
    assert r.headers["Retry-After"] == "7"


@pytest.mark.anyio
async def test_quota_is_a_429_insufficient_quota_without_retry_after() -> None:
    async with api() as a:
        r = await a.chat("[emulate quota] hi")
    assert r.status == 429
    assert r.json == {
        "error": {
            "message": QUOTA,
            "type": "insufficient_quota",
            "code": "insufficient_quota",
        }
    }
    assert "Retry-After" not in r.headers


@pytest.mark.anyio
async def test_error200_is_a_200_carrying_an_error_object() -> None:
    async with api() as a:
        r = await a.chat("[emulate error200] hi")
    assert r.status == 200
    assert "choices" not in r.json
    assert r.json["error"]["code"] == "server_error"


@pytest.mark.anyio
async def test_latency_and_delay_ms_sleep_on_the_injected_clock() -> None:
    async with api(latency_ms=100) as a:
        await a.chat("[emulate delay_ms=250] hi")
        await a.chat("plain")
    assert a.clock.slept == [pytest.approx(0.35), pytest.approx(0.1)]


def test_parse_script_reads_every_option() -> None:
    text = "x [emulate status=500,429,200 quota error200 delay_ms=5 truncate_stream retry_after=3]"
    assert parse_script(text) == Script((500, 429, 200), True, True, 5.0, True, 3)
    assert parse_script("no directive") == Script()
    for bad in ("[emulate status=302]", "[emulate delay_ms=-1]", "[emulate retry_after=x]"):
        with pytest.raises(ValueError):
            parse_script(bad)


# --- limits -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_sliding_window_admits_three_per_ten_seconds() -> None:
    async with api(limit_requests=3, window_s=10) as a:
        for _ in range(3):
            assert (await a.chat()).status == 200
            a.clock.advance(1)
        refused = await a.chat()  # t=3: the t=0 request leaves at t=10
        a.clock.advance(6.9)
        still = await a.chat()
        a.clock.advance(0.1)
        freed = await a.chat()
        stats = await a.get("/emulator/stats")
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "7"
    assert refused.json["error"] == {
        "message": "Rate limit exceeded. Please try again in 7 seconds.",
        "type": "rate_limit_error",
        "code": "rate_limit_exceeded",
    }
    assert (still.status, still.headers["Retry-After"]) == (429, "1")
    assert freed.status == 200
    assert stats["admitted_times"] == [1000.0, 1001.0, 1002.0, 1010.0]
    assert stats["rate_limited"] == 2


@pytest.mark.anyio
async def test_token_window_and_a_request_too_large_to_ever_fit() -> None:
    async with api(limit_tokens=40, window_s=10, dialect="openai") as a:
        ok = [(await a.chat()).status for _ in range(2)]  # 16 tokens each
        full = await a.chat()
        huge = await a.chat("x" * 400)
    assert ok == [200, 200]
    assert (full.status, full.headers["Retry-After"]) == (429, "10")
    assert full.headers["x-ratelimit-remaining-tokens"] == "8"
    assert huge.status == 429
    assert "never fit" in huge.json["error"]["message"]
    assert "Retry-After" not in huge.headers


@pytest.mark.anyio
async def test_daily_limit_waits_for_the_next_day() -> None:
    async with api(daily_limit=2, day_s=100) as a:  # t=1000 is the start of day 10
        first = [(await a.chat()).status for _ in range(2)]
        a.clock.advance(30)
        refused = await a.chat()
        a.clock.advance(70)
        tomorrow = await a.chat()
    assert first == [200, 200]
    assert refused.status == 429
    assert refused.json["error"] == {
        "message": "Daily request limit reached. Try again tomorrow.",
        "type": "rate_limit_error",
        "code": "daily_limit_exceeded",
    }
    assert refused.headers["Retry-After"] == "70"
    assert refused.headers["X-RateLimit-Reset-After"] == "70.000"
    assert tomorrow.status == 200


# --- rate-limit header dialects ---------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reset_format", "reset"),
    [("epoch_s", "1700001010"), ("epoch_ms", "1700001010000"), ("delta", "6")],
)
async def test_selam_headers_track_the_oldest_request(reset_format: str, reset: str) -> None:
    async with api(limit_requests=3, window_s=10, selam_reset_format=reset_format) as a:
        await a.chat()
        a.clock.advance(4)
        r = await a.chat()
    assert r.headers["X-RateLimit-Limit"] == "3"
    assert r.headers["X-RateLimit-Remaining"] == "1"
    assert r.headers["X-RateLimit-Reset-After"] == "6.000"
    assert r.headers["X-RateLimit-Reset"] == reset


@pytest.mark.anyio
async def test_selam_headers_switch_to_the_exhausted_daily_limit() -> None:
    async with api(limit_requests=5, window_s=60, daily_limit=1, day_s=100) as a:
        r = await a.chat()
    assert (r.headers["X-RateLimit-Limit"], r.headers["X-RateLimit-Remaining"]) == ("1", "0")
    assert r.headers["X-RateLimit-Reset-After"] == "100.000"


@pytest.mark.anyio
async def test_openai_headers_give_full_restore_durations() -> None:
    async with api(limit_requests=3, window_s=10, limit_tokens=1000, dialect="openai") as a:
        await a.chat()
        a.clock.advance(1.5)
        r = await a.post(b"not json")  # answers without using quota
    assert {k: v for k, v in r.headers.items() if k.startswith("x-ratelimit")} == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "8.5s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "984",
        "x-ratelimit-reset-tokens": "8.5s",
    }


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.25, "250ms"), (1, "1s"), (8.5, "8.5s"), (360, "6m0s"), (3725.2, "1h2m5.2s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.anyio
async def test_ietf_headers_agree_with_retry_after() -> None:
    async with api(limit_requests=2, window_s=10, dialect="ietf") as a:
        first = await a.chat()
        a.clock.advance(3)
        await a.chat()
        refused = await a.chat()
    assert first.headers["RateLimit-Limit"] == "2, 2;w=10"
    assert (first.headers["RateLimit-Remaining"], first.headers["RateLimit-Reset"]) == ("1", "10")
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert refused.headers["RateLimit-Reset"] == refused.headers["Retry-After"] == "7"


@pytest.mark.anyio
async def test_ietf_structured_headers_name_each_policy() -> None:
    config = {"limit_requests": 3, "window_s": 10, "limit_tokens": 1000, "daily_limit": 50}
    async with api(dialect="ietf-structured", **config) as a:
        r = await a.chat()
    assert r.headers["RateLimit-Policy"] == (
        '"requests";q=3;w=10, "tokens";q=1000;w=10, "daily";q=50;w=86400'
    )
    assert r.headers["RateLimit"] == (
        '"requests";r=2;t=10, "tokens";r=984;t=10, "daily";r=49;t=85400'
    )


@pytest.mark.anyio
async def test_dialect_none_and_no_limits_send_no_rate_limit_headers() -> None:
    async with api(limit_requests=1, dialect="none") as a:
        ok, refused = await a.chat(), await a.chat()
    async with api() as unlimited:
        free = await unlimited.chat()
    for r in (ok, refused, free):
        assert not [k for k in r.headers if "ratelimit" in k.lower()]
    assert refused.headers["Retry-After"] == "60"


@pytest.mark.anyio
async def test_retry_after_can_be_switched_off() -> None:
    async with api(limit_requests=1, retry_after=False) as a:
        await a.chat()
        refused = await a.chat()
        a.clock.advance(60)
        scripted = await a.chat("[emulate status=503]")
    assert (refused.status, scripted.status) == (429, 503)
    assert "Retry-After" not in refused.headers
    assert "Retry-After" not in scripted.headers


# --- streaming ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_stream_sends_role_content_finish_usage_and_done() -> None:
    async with api() as a:
        plain = (await a.chat("Stream me please")).json
        r = await a.chat("Stream me please", stream=True, stream_options={"include_usage": True})
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(r.raw)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert {(c["object"], c["id"]) for c in chunks} == {("chat.completion.chunk", chunks[0]["id"])}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert text == plain["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == plain["usage"]


@pytest.mark.anyio
async def test_truncate_stream_ends_without_finish_or_done() -> None:
    async with api() as a:
        cut = await a.chat("[emulate truncate_stream] Stream me", stream=True)
        failed = await a.chat("[emulate error200] Stream me", stream=True)
    events = sse_events(cut.raw)
    assert "[DONE]" not in events
    assert all(orjson.loads(e)["choices"][0]["finish_reason"] is None for e in events)
    error = {
        "message": "The model failed (emulated).",
        "type": "server_error",
        "code": "server_error",
    }
    assert [orjson.loads(e) for e in sse_events(failed.raw)] == [{"error": error}]


# --- determinism, admin routes --------------------------------------------------------------


@pytest.mark.anyio
async def test_fail_rate_is_seeded_and_reset_replays_it() -> None:
    async with api(fail_rate=0.5, seed=7, limit_requests=100) as a:
        first = [(await a.chat(f"row {i}")).status for i in range(20)]
        async with a.session.post(a.base.removesuffix("/v1") + "/emulator/reset") as r:
            assert r.status == 200
        assert (await a.get("/emulator/stats"))["requests"] == 0
        second = [(await a.chat(f"row {i}")).status for i in range(20)]
    assert first == second
    assert {200, 500, 503} <= set(first)


@pytest.mark.anyio
async def test_models_lists_the_selam_models() -> None:
    async with api() as a:
        models = await a.get("/v1/models")
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == [
        "selam-turbo",
        "selam-thinking",
        "selam-plus",
        "selam-coder",
        "selam-search",
    ]


# --- the window as a pure object ----------------------------------------------------------------


@given(
    gaps=st.lists(st.integers(0, 20), min_size=1, max_size=40),
    tokens=st.lists(st.integers(1, 60), min_size=40, max_size=40),
    limit=st.integers(1, 5),
    limit_tokens=st.integers(60, 200),
    window=st.integers(1, 30),
)
def test_window_never_overfills_and_its_wait_is_exact(
    gaps: list[int], tokens: list[int], limit: int, limit_tokens: int, window: int
) -> None:
    rw = RateWindow(
        limit_requests=limit,
        limit_tokens=limit_tokens,
        window_s=window,
        daily_limit=None,
        day_s=1e6,
    )
    now, admitted = 0.0, []
    for gap, cost in zip(gaps, tokens, strict=False):
        now += gap
        rejection = rw.check(now, cost)
        if rejection is None:
            rw.admit(now, cost)
            admitted.append((now, cost))
            recent = [n for t, n in admitted if t > now - window]
            assert len(recent) <= limit and sum(recent) <= limit_tokens
            continue
        assert rejection.reason == "window" and rejection.wait_s > 0
        later, too_soon = copy.deepcopy(rw), copy.deepcopy(rw)
        assert later.check(now + rejection.wait_s, cost) is None
        assert too_soon.check(now + rejection.wait_s - 0.5, cost) is not None
