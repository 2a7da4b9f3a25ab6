"""The built-in emulator of the chat-completions API: local, free and deterministic.

An aiohttp server for users trying a job file without a key, and for tests and benchmarks
(in-process on a loopback port via `serve_emulator`, or as `runner mock-server`).
Routes: POST /v1/chat/completions, GET /v1/models, GET /emulator/stats, POST /emulator/reset.

A chat request passes, in order: auth (401) → body checks (400; 404 for `missing-*` models) →
latency → daily limit (429) → sliding window of requests and tokens (429) → scripted or
`fail_rate` errors → a 200 completion (JSON or SSE). A request past both limits is "admitted"
and stays in the window whatever it is answered. Rate-limit headers: `runner.emulator_headers`.

Token rule (`runner.tokens` estimates with the same arithmetic; tests rely on it):

    prompt_tokens     = sum over messages of (ceil(chars(text) / 4) + 4)
    completion_tokens = ceil(chars(reply) / 4), capped at max_completion_tokens or max_tokens;
                        a capped reply is cut to 4 * cap characters and finishes with "length"
    total_tokens      = prompt_tokens + completion_tokens   (what limit_tokens is charged)

text is a string content, or the `text` values of a list content's parts concatenated; chars
counts code points. reply = "Echo: " + the first 200 chars of the last user message's text
(directive removed, stripped) + " (emulated reply)".

Scripting, for tests: the last user message may hold `[emulate OPTION ...]`, options separated
by spaces. `status=500,200`: the k-th admitted arrival of this exact body (sha256 of its
canonical JSON) gets the k-th status, the last one repeating; a step `quota` is the
insufficient_quota 429 (`status=quota,200`). `quota`: always 429 insufficient_quota.
`error200`: 200 with an error body (one SSE error event when streaming). `delay_ms=N`: extra
latency. `truncate_stream`: the SSE stream stops after the content, with neither finish chunk
nor `[DONE]`. `retry_after=N`: Retry-After of a scripted 429/503 (default 1). Anything else: 400.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import math
import random
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from typing import Any

import orjson
from aiohttp import web

from runner.clock import Clock, SystemClock
from runner.emulator_headers import DIALECTS, RESET_FORMATS, RateWindow, ceil_s, rate_limit_headers

MODELS = ("selam-turbo", "selam-thinking", "selam-plus", "selam-coder", "selam-search")
ECHO_CHARS = 200
REPLY_PREFIX = "Echo: "
REPLY_SUFFIX = " (emulated reply)"
_PER_MESSAGE_TOKENS = 4
_DIRECTIVE = re.compile(r"\[emulate\b([^\]]*)\]")
_SSE_PIECE = re.compile(r"\S+\s*|\s+")
_FLAGS = ("quota", "error200", "truncate_stream")

# (type, code, message) of the error body for each status a script may ask for.
_ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("invalid_request_error", "invalid_request", "Invalid request (emulated)."),
    401: ("authentication_error", "invalid_api_key", "Invalid API key provided."),
    403: ("permission_error", "permission_denied", "You do not have access to this resource."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    408: ("timeout_error", "request_timeout", "The request timed out (emulated)."),
    409: ("conflict_error", "conflict", "The request conflicts with another one (emulated)."),
    413: ("invalid_request_error", "request_too_large", "The request body is too large."),
    422: ("invalid_request_error", "unprocessable_entity", "The request cannot be processed."),
    429: ("rate_limit_error", "rate_limit_exceeded", "Rate limit exceeded (emulated)."),
    500: ("server_error", "server_error", "The server had an error processing your request."),
    502: ("server_error", "bad_gateway", "Bad gateway (emulated)."),
    503: ("server_error", "service_unavailable", "The service is temporarily overloaded."),
    504: ("server_error", "gateway_timeout", "The gateway timed out (emulated)."),
}
_QUOTA_MESSAGE = "You exceeded your current quota, please check your plan and billing details."


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulator limits and fails; the defaults answer everything at once with 200."""

    limit_requests: int | None = None  # requests per window; None = unlimited
    window_s: float = 60.0  # strict sliding window over admitted request times
    limit_tokens: int | None = None  # tokens per the same sliding window
    daily_limit: int | None = None  # requests per "day" (day number = floor(monotonic / day_s))
    day_s: float = 86_400.0
    dialect: str = "selam"  # "selam" | "openai" | "ietf" | "ietf-structured" | "none"
    selam_reset_format: str = "epoch_s"  # X-RateLimit-Reset: "epoch_s" | "epoch_ms" | "delta"
    retry_after: bool = True  # send Retry-After (whole seconds, rounded up) on 429/503
    latency_ms: float = 0.0
    fail_rate: float = 0.0  # fraction of admitted requests answered 500/503 (seeded RNG)
    seed: int = 0
    api_key: str | None = None  # when set, any other bearer token gets 401

    def __post_init__(self) -> None:
        limits = (self.limit_requests, self.limit_tokens, self.daily_limit)
        problems = [
            (self.dialect not in DIALECTS, f"dialect must be one of {DIALECTS}"),
            (self.selam_reset_format not in RESET_FORMATS, f"reset format: {RESET_FORMATS}"),
            (self.window_s <= 0 or self.day_s <= 0, "window_s and day_s must be positive"),
            (not 0.0 <= self.fail_rate <= 1.0, "fail_rate must be between 0 and 1"),
            (self.latency_ms < 0, "latency_ms must not be negative"),
            (any(x is not None and x < 1 for x in limits), "a limit must be at least 1"),
        ]
        for failed, message in problems:
            if failed:
                raise ValueError(f"EmulatorConfig: {message}")


@dataclass
class EmulatorStats:
    """Counters of /v1/chat/completions, read by tests and benchmarks."""

    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    admitted_times: list[float] = field(default_factory=list)  # clock.monotonic() values
    tokens: int = 0  # total tokens charged by admitted requests
    prompt_tokens: int = 0
    completion_tokens: int = 0
    rate_limited: int = 0  # 429s from the window or the daily limit (not scripted ones)
    in_flight: int = 0
    max_in_flight: int = 0

    def clear(self) -> None:
        """Zero the counters in place; requests still in flight stay counted."""
        in_flight, fresh = self.in_flight, EmulatorStats()
        for f in fields(self):
            setattr(self, f.name, getattr(fresh, f.name))
        self.in_flight = self.max_in_flight = in_flight

    def to_json(self) -> dict[str, Any]:
        """The counters as a JSON-ready dict (status keys become strings), plus `admitted`."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["by_status"] = {str(k): v for k, v in sorted(self.by_status.items())}
        out["admitted"] = len(self.admitted_times)
        return out


class ApiError(Exception):
    """An error answer: HTTP status, Selam error body fields and an optional Retry-After."""

    def __init__(
        self, status: int, kind: str, code: str, message: str, retry_after_s: int | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.code, self.message = status, kind, code, message
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, Any]:
        """The Selam error body (no `param`, unlike OpenAI)."""
        return {"error": {"message": self.message, "type": self.kind, "code": self.code}}

    @classmethod
    def for_status(cls, status: int, retry_after_s: int | None = None) -> ApiError:
        """The canned error of a status, with a generic one for statuses not in the table."""
        generic = (
            ("server_error", "server_error") if status >= 500 else ("invalid_request_error",) * 2
        )
        kind, code, message = _ERRORS.get(status, (*generic, f"Emulated error {status}."))
        return cls(status, kind, code, message, retry_after_s)


def _invalid(message: str, code: str = "invalid_request") -> ApiError:
    return ApiError(400, "invalid_request_error", code, message)


@dataclass(frozen=True)
class Script:
    """What an `[emulate ...]` directive asks for."""

    statuses: tuple[int, ...] = ()
    quota: bool = False
    error200: bool = False
    delay_ms: float = 0.0
    truncate_stream: bool = False
    retry_after_s: int | None = None


def parse_script(text: str) -> Script:
    """Read the first `[emulate ...]` directive in `text`; ValueError on a bad option."""
    match = _DIRECTIVE.search(text)
    if match is None:
        return Script()
    statuses: tuple[int, ...] = ()
    flags: set[str] = set()
    delay_ms, retry_after_s = 0.0, None
    for option in match.group(1).split():
        name, _, value = option.partition("=")
        if name in _FLAGS and not value:
            flags.add(name)
        elif name == "status" and value:
            statuses = tuple(_script_status(item) for item in value.split(","))
        elif name == "delay_ms" and value and float(value) >= 0:
            delay_ms = float(value)
        elif name == "retry_after" and value.isdigit():
            retry_after_s = int(value)
        else:
            raise ValueError(f"bad [emulate] option {option!r}")
    quota, error200, truncate = (flag in flags for flag in _FLAGS)
    return Script(statuses, quota, error200, delay_ms, truncate, retry_after_s)


# `status=quota,200`: the insufficient_quota 429 as one step of a scripted sequence.
_QUOTA_STEP = 0


def _script_status(text: str) -> int:
    if text == "quota":
        return _QUOTA_STEP
    status = int(text)
    if status != 200 and not 400 <= status <= 599:
        raise ValueError(f"[emulate] status must be 200 or 400-599, got {status}")
    return status


def message_text(message: dict[str, Any]) -> str:
    """The text of a message: a string content, or its parts' `text` values concatenated."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = (part.get("text") for part in content if isinstance(part, dict))
    return "".join(text for text in texts if isinstance(text, str))


def count_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """prompt_tokens under the token rule."""
    return sum(math.ceil(len(message_text(m)) / 4) + _PER_MESSAGE_TOKENS for m in messages)


def make_reply(last_user_text: str, cap: int | None) -> tuple[str, int, str]:
    """(reply, completion_tokens, finish_reason) under the token rule."""
    echoed = _DIRECTIVE.sub("", last_user_text).strip()[:ECHO_CHARS]
    reply = f"{REPLY_PREFIX}{echoed}{REPLY_SUFFIX}"
    if cap is not None and math.ceil(len(reply) / 4) > cap:
        return reply[: 4 * cap], cap, "length"
    return reply, math.ceil(len(reply) / 4), "stop"


@dataclass(frozen=True)
class ChatRequest:
    """A checked chat-completion request and the reply it will get."""

    key: str  # sha256 hex of the canonical body: names the completion, keys status scripts
    model: str
    stream: bool
    include_usage: bool
    script: Script
    prompt_tokens: int
    reply: str
    completion_tokens: int
    finish_reason: str

    @property
    def total_tokens(self) -> int:
        """What the request is charged against limit_tokens."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def completion_id(self) -> str:
        """`chatcmpl-` and 24 hex digits: the same body always gets the same id."""
        return f"chatcmpl-{self.key[:24]}"

    def usage(self) -> dict[str, int]:
        """The OpenAI usage object."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


def parse_request(raw: bytes) -> ChatRequest:
    """Check a request body and work out its reply; ApiError for a 400 or a 404."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _invalid(
            "We could not parse the JSON body of your request.", "invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object.")
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        raise _invalid("Missing required parameter: 'model'.", "missing_parameter")
    if not isinstance(messages, list) or not messages:
        raise _invalid("Missing required parameter: 'messages'.", "missing_parameter")
    if not all(isinstance(m, dict) for m in messages):
        raise _invalid("Every item of 'messages' must be an object.")
    if model.startswith("missing-"):
        message = f"The model '{model}' does not exist or you do not have access to it."
        raise ApiError(404, "invalid_request_error", "model_not_found", message)
    user_text = next((message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
    try:
        script = parse_script(user_text)
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    reply, completion_tokens, finish_reason = make_reply(user_text, _completion_cap(body))
    options = body.get("stream_options")
    return ChatRequest(
        key=hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest(),
        model=model,
        stream=body.get("stream") is True,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        script=script,
        prompt_tokens=count_prompt_tokens(messages),
        reply=reply,
        completion_tokens=completion_tokens,
        finish_reason=finish_reason,
    )


def _completion_cap(body: dict[str, Any]) -> int | None:
    # Same precedence as runner.tokens: the newer name wins.
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _invalid(f"'{name}' must be a non-negative integer.")
        return value
    return None


class Emulator:
    """The emulated API; all its state (window, stats, scripts, RNG) lives on the instance."""

    def __init__(self, config: EmulatorConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.stats = EmulatorStats()
        self._reset_state()

    def _reset_state(self) -> None:
        cfg = self.config
        self.stats.clear()
        self._window = RateWindow(
            limit_requests=cfg.limit_requests,
            limit_tokens=cfg.limit_tokens,
            window_s=cfg.window_s,
            daily_limit=cfg.daily_limit,
            day_s=cfg.day_s,
        )
        self._rng = random.Random(cfg.seed)
        self._arrivals: dict[str, int] = {}  # body key → admitted arrivals, for status scripts
        self._request_ids = itertools.count(1)

    def app(self) -> web.Application:
        """A new aiohttp application serving this emulator."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/emulator/stats", self._stats)
        app.router.add_post("/emulator/reset", self._reset)
        # A signal rather than a middleware: it also reaches SSE responses, prepared mid-handler.
        app.on_response_prepare.append(self._add_request_id)
        return app

    async def _add_request_id(self, _request: web.Request, response: web.StreamResponse) -> None:
        response.headers["x-request-id"] = f"req_{next(self._request_ids):012d}"

    async def _models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _json(401, ApiError.for_status(401).body(), {})
        data = [
            {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "selam"}
            for m in MODELS
        ]
        return _json(200, {"object": "list", "data": data}, {})

    async def _stats(self, _request: web.Request) -> web.Response:
        return _json(200, self.stats.to_json(), {})

    async def _reset(self, _request: web.Request) -> web.Response:
        self._reset_state()
        return _json(200, {"reset": True}, {})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            response = await self._answer(request)
        finally:
            stats.in_flight -= 1
        stats.by_status[response.status] = stats.by_status.get(response.status, 0) + 1
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        """Run the steps of the module docstring; every error becomes one JSON answer."""
        try:
            if not self._authorized(request):
                raise ApiError.for_status(401)
            chat = parse_request(await request.read())
            delay_ms = self.config.latency_ms + chat.script.delay_ms
            if delay_ms > 0:
                await self.clock.sleep(delay_ms / 1000)
            self._admit(chat)
            return await self._reply(request, chat)
        except ApiError as err:
            headers = self._limit_headers()
            if err.retry_after_s is not None:
                headers["Retry-After"] = str(err.retry_after_s)
            return _json(err.status, err.body(), headers)

    def _authorized(self, request: web.Request) -> bool:
        expected = self.config.api_key
        if expected is None:
            return True
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        # Constant-time compare; the presented token is never logged or echoed.
        matches = hmac.compare_digest(token.strip().encode(), expected.encode())
        return scheme.lower() == "bearer" and matches

    def _admit(self, chat: ChatRequest) -> None:
        """Count the request in the window, or raise the 429 of the limit it hits."""
        now = self.clock.monotonic()
        rejection = self._window.check(now, chat.total_tokens)
        if rejection is not None:
            self.stats.rate_limited += 1
            wait_s = max(1, ceil_s(rejection.wait_s))
            retry_after = wait_s if self.config.retry_after else None
            if rejection.reason == "daily":
                message = "Daily request limit reached. Try again tomorrow."
                raise ApiError(
                    429, "rate_limit_error", "daily_limit_exceeded", message, retry_after
                )
            if rejection.reason == "too_large":
                # No wait can help, so no Retry-After that would invite a retry.
                message = (
                    f"Request too large: it needs {chat.total_tokens} tokens but the limit is "
                    f"{self.config.limit_tokens} per {self.config.window_s:g} s; it can never fit."
                )
                raise ApiError(429, "rate_limit_error", "rate_limit_exceeded", message)
            message = f"Rate limit exceeded. Please try again in {wait_s} seconds."
            raise ApiError(429, "rate_limit_error", "rate_limit_exceeded", message, retry_after)
        self._window.admit(now, chat.total_tokens)
        stats = self.stats
        stats.admitted_times.append(now)
        stats.tokens += chat.total_tokens
        stats.prompt_tokens += chat.prompt_tokens
        stats.completion_tokens += chat.completion_tokens

    async def _reply(self, request: web.Request, chat: ChatRequest) -> web.StreamResponse:
        """Answer an admitted request: scripted outcome, else `fail_rate`, else a completion."""
        script = chat.script
        status = self._pick_status(chat)
        if script.quota or status == _QUOTA_STEP:
            raise ApiError(429, "insufficient_quota", "insufficient_quota", _QUOTA_MESSAGE)
        headers = self._limit_headers()
        if script.error200:
            error = ApiError(200, "server_error", "server_error", "The model failed (emulated).")
            if chat.stream:
                # A stream that fails after its 200 went out: one error event, no [DONE].
                return await _send_sse(request, headers, [error.body()], done=False)
            return _json(200, error.body(), headers)
        if status != 200:
            default = 1 if self.config.retry_after else None
            retry_after = script.retry_after_s if script.retry_after_s is not None else default
            raise ApiError.for_status(status, retry_after if status in (429, 503) else None)
        created = int(self.clock.time())
        if chat.stream:
            events = list(stream_chunks(chat, created))
            return await _send_sse(request, headers, events, done=not script.truncate_stream)
        return _json(200, completion_body(chat, created), headers)

    def _pick_status(self, chat: ChatRequest) -> int:
        """The scripted status of this arrival, else a seeded `fail_rate` draw, else 200."""
        statuses = chat.script.statuses
        if statuses:
            seen = self._arrivals.get(chat.key, 0)
            self._arrivals[chat.key] = seen + 1
            return statuses[min(seen, len(statuses) - 1)]
        if self.config.fail_rate > 0 and self._rng.random() < self.config.fail_rate:
            return 500 if self._rng.random() < 0.5 else 503
        return 200

    def _limit_headers(self) -> dict[str, str]:
        cfg, now = self.config, self.clock.monotonic()
        limits = self._window.limits(now)
        return rate_limit_headers(cfg.dialect, limits, self.clock.time(), cfg.selam_reset_format)


def completion_body(chat: ChatRequest, created: int) -> dict[str, Any]:
    """The non-streamed 200 body."""
    message = {"role": "assistant", "content": chat.reply}
    return {
        "id": chat.completion_id,
        "object": "chat.completion",
        "created": created,
        "model": chat.model,
        "choices": [{"index": 0, "message": message, "finish_reason": chat.finish_reason}],
        "usage": chat.usage(),
    }


def stream_chunks(chat: ChatRequest, created: int) -> Iterator[dict[str, Any]]:
    """The SSE payloads: role, content pieces, finish_reason, then usage if asked for.

    A `truncate_stream` script stops after the content pieces, as a dropped connection would.
    """
    head = {"id": chat.completion_id, "object": "chat.completion.chunk", "created": created}
    head["model"] = chat.model

    def chunk(delta: dict[str, str], finish_reason: str | None = None) -> dict[str, Any]:
        return head | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}

    yield chunk({"role": "assistant", "content": ""})
    for piece in _SSE_PIECE.findall(chat.reply):
        yield chunk({"content": piece})
    if chat.script.truncate_stream:
        return
    yield chunk({}, chat.finish_reason)
    if chat.include_usage:
        yield head | {"choices": [], "usage": chat.usage()}


def _json(status: int, payload: dict[str, Any], headers: dict[str, str]) -> web.Response:
    body = orjson.dumps(payload)
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


async def _send_sse(
    request: web.Request, headers: dict[str, str], events: list[dict[str, Any]], *, done: bool
) -> web.StreamResponse:
    sse = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    response = web.StreamResponse(status=200, headers=headers | sse)
    await response.prepare(request)
    try:
        for event in events:
            await response.write(b"data: " + orjson.dumps(event) + b"\n\n")
        if done:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client left mid-stream; there is no one left to tell
    return response


@asynccontextmanager
async def serve_emulator(
    config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0, clock: Clock | None = None
) -> AsyncIterator[tuple[Emulator, str]]:
    """Serve an emulator on host:port (0 = any free port); yield it and its `.../v1` base URL."""
    emulator = Emulator(config, clock)
    runner = web.AppRunner(emulator.app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_port = runner.addresses[0][1]
        url_host = f"[{host}]" if ":" in host else host
        yield emulator, f"http://{url_host}:{bound_port}/v1"
    finally:
        await runner.cleanup()
