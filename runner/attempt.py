"""One attempt at one job: wait for the limiter, send, classify, and turn it into an outcome."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio
import orjson

from runner.breaker import CircuitBreaker
from runner.cache.use import CacheUse
from runner.classify import Kind, Verdict, classify
from runner.client import RawResponse, Transport, TransportError
from runner.clock import Clock
from runner.limits import Limiter, Permit, TokensNeverFit, WaitTooLong
from runner.ratelimit_headers import RateLimitInfo, parse_rate_limit_headers
from runner.redact import redact, redact_bytes
from runner.retry import RetryPolicy
from runner.store.protocol import ClaimedJob, Outcome

log = logging.getLogger("runner.attempt")

MAX_STORED_ERROR_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class StopRequest:
    """Why dispatch must stop: interrupted | quota | auth | budget."""

    kind: str
    reason: str
    resume_after_s: float | None = None


def _usage(parsed: dict[str, object] | None) -> tuple[int, int]:
    usage = parsed.get("usage") if parsed else None
    if not isinstance(usage, dict):
        return 0, 0
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) else 0,
        completion if isinstance(completion, int) else 0,
    )


def _json_or_none(body: bytes) -> bytes | None:
    if not body or len(body) > MAX_STORED_ERROR_BODY:
        return None
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return body


class Attempt:
    """Everything one attempt needs, shared by all workers of a run."""

    def __init__(
        self,
        transport: Transport,
        limiter: Limiter,
        policy: RetryPolicy,
        clock: Clock,
        *,
        max_wait_s: float,
        secrets: tuple[str, ...] = (),
        cache: CacheUse | None = None,
    ) -> None:
        self.cache = cache
        self.transport = transport
        self.limiter = limiter
        self.policy = policy
        self.clock = clock
        self.max_wait_s = max_wait_s
        self.secrets = secrets
        self.breaker = CircuitBreaker()
        self.sent = 0
        self.in_flight = 0
        self.answers = 0
        self.rate_limited = 0
        self._waiting: set[anyio.CancelScope] = set()
        self._warned: set[str] = set()

    def stop_waiting(self) -> None:
        """Abandon every wait for the limiter; those jobs go back to the queue unsent."""
        for scope in self._waiting:
            scope.cancel()

    async def _permit(self, job: ClaimedJob) -> Permit | Outcome | StopRequest:
        try:
            # Most sends need no wait, and then no cancel scope either (it would cost more CPU
            # than the rest of the limiter).
            permit = self.limiter.try_acquire(job.est_tokens)
            if permit is not None:
                return permit
            with anyio.CancelScope() as scope:
                self._waiting.add(scope)
                try:
                    return await self.limiter.acquire(job.est_tokens)
                finally:
                    self._waiting.discard(scope)
        except TokensNeverFit as exc:
            return Outcome(
                job.id,
                "failed",
                error_code="exceeds_token_budget",
                error_message=f"request {exc}; it can never be sent",
            )
        except WaitTooLong as exc:
            return StopRequest(
                "quota", f"{exc.reason}: the next send is {exc.wait_s:.0f}s away", exc.wait_s
            )
        # Only a cancelled wait gets here (stop_waiting): the job goes back unsent.
        return Outcome(job.id, "pending")

    async def run(self, job: ClaimedJob, jitter: float) -> tuple[Outcome, StopRequest | None]:
        """Serve the job from the cache, or make one attempt; return the outcome and any stop."""
        key = self.cache.key_for(job.body) if self.cache is not None else None
        if key is not None and self.cache is not None:
            hit = await self.cache.lookup(key, self.clock.time())
            if hit is not None:
                return Outcome(job.id, "done", 200, None, hit.body, cached=True), None
        outcome, stop = await self._send(job, jitter)
        if key is not None and self.cache is not None and outcome.state == "done":
            usage = (outcome.prompt_tokens, outcome.completion_tokens)
            assert outcome.response is not None
            await self.cache.remember(key, outcome.response, job.model, usage, self.clock.time())
        return outcome, stop

    async def _send(self, job: ClaimedJob, jitter: float) -> tuple[Outcome, StopRequest | None]:
        permit = await self._permit(job)
        if isinstance(permit, Outcome):
            return permit, None
        if isinstance(permit, StopRequest):
            return Outcome(job.id, "pending"), permit
        self.sent += 1
        self.in_flight += 1
        try:
            response = await self.transport.send(job.body)
        except TransportError as exc:
            # No answer is still news for the limiter: the first-answer gate must not wait on it.
            self.limiter.settle(permit, RateLimitInfo(), None)
            message = redact(exc.message, self.secrets)
            tripped = self._trip_breaker()
            if tripped and self.answers == 0:
                # Nothing has ever answered: a wrong URL or a network down, not a flaky
                # server. Stop before every job burns its retries on it.
                stop = StopRequest("unreachable", f"no answer from the API: {message}")
                return Outcome(job.id, "pending", error_code=exc.code, error_message=message), stop
            return self._again(job, jitter, None, exc.code, message, None, rate_limited=False), None
        finally:
            self.in_flight -= 1
        self.answers += 1
        return self._decide(job, jitter, permit, self._scrubbed(response))

    def _scrubbed(self, response: RawResponse) -> RawResponse:
        """The response with any echo of the key removed before it can be stored."""
        body = redact_bytes(response.body, self.secrets)
        return (
            response
            if body is response.body
            else RawResponse(response.status, response.headers, body)
        )

    def _decide(
        self, job: ClaimedJob, jitter: float, permit: Permit, response: RawResponse
    ) -> tuple[Outcome, StopRequest | None]:
        now = self.clock.time()
        info = parse_rate_limit_headers(response.headers, now)
        self._warn_once(info.problems)
        verdict = classify(response.status, response.headers, response.body, now, self.max_wait_s)
        prompt, completion = _usage(verdict.parsed)
        self.limiter.settle(permit, info, prompt + completion if verdict.kind is Kind.OK else None)
        request_id = response.headers.get("x-request-id") or response.headers.get("request-id")
        if request_id is not None:
            # Stored and exported like the body, so an echoed key is scrubbed from it too.
            request_id = redact(request_id, self.secrets)
        if verdict.kind is Kind.OK:
            self.breaker.success()
            return Outcome(
                job.id,
                "done",
                response.status,
                request_id,
                response.body,
                prompt_tokens=prompt,
                completion_tokens=completion,
            ), None
        message = redact(verdict.message or "", self.secrets)
        body = _json_or_none(response.body)
        return self._refused(job, jitter, verdict, response.status, message, body, request_id)

    def _refused(
        self,
        job: ClaimedJob,
        jitter: float,
        verdict: Verdict,
        status: int,
        message: str,
        body: bytes | None,
        request_id: str | None,
    ) -> tuple[Outcome, StopRequest | None]:
        code = verdict.code or f"http_{status}"
        if verdict.kind is Kind.AUTH:
            stop = StopRequest("auth", f"the API refused the key (HTTP {status} {code}): {message}")
            return Outcome(job.id, "pending", status, error_code=code, error_message=message), stop
        if verdict.kind is Kind.QUOTA:
            self.rate_limited += status == 429
            wait = verdict.wait_s
            stop = StopRequest("quota", f"quota exhausted (HTTP {status} {code}): {message}", wait)
            return Outcome(job.id, "pending", status, error_code=code, error_message=message), stop
        if verdict.kind is Kind.FAILED:
            self.breaker.success()
            outcome = Outcome(job.id, "failed", status, request_id, body, code, message)
            return outcome, None
        if verdict.kind is Kind.RATE_LIMITED:
            self.rate_limited += 1
            self.limiter.rate_limited(verdict.wait_s)
        else:
            self._trip_breaker()
        limited = verdict.kind is Kind.RATE_LIMITED
        outcome = self._again(job, jitter, status, code, message, body, limited, verdict.wait_s)
        return outcome, None

    def _again(
        self,
        job: ClaimedJob,
        jitter: float,
        status: int | None,
        code: str,
        message: str,
        body: bytes | None,
        rate_limited: bool,
        server_wait_s: float | None = None,
    ) -> Outcome:
        attempts_made = job.attempts + 1
        if self.policy.gives_up(attempts_made, rate_limited):
            message = f"{message} (gave up after {attempts_made} attempts)"
            return Outcome(job.id, "failed", status, None, body, code, message)
        delay = self.policy.delay_s(attempts_made, jitter, server_wait_s)
        return Outcome(
            job.id, "retry", status, None, None, code, message, retry_at=self.clock.time() + delay
        )

    def _trip_breaker(self) -> bool:
        pause = self.breaker.failure()
        if pause is None:
            return False
        if self.answers:
            log.warning(
                "%d consecutive server or connection failures: pausing all sends for %.0fs",
                self.breaker.threshold,
                pause,
            )
            self.limiter.pause(pause, "circuit breaker: repeated server failures")
        return True

    def _warn_once(self, problems: tuple[str, ...]) -> None:
        for problem in problems:
            header = problem.partition(":")[0]
            if header not in self._warned:
                self._warned.add(header)
                log.warning("ignoring a rate-limit header it cannot read: %s", problem)
