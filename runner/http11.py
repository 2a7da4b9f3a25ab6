"""A lean HTTP/1.1 transport for the one endpoint a run talks to.

Why not aiohttp here: at thousands of requests a second, aiohttp's per-request machinery (a
request object, a payload object, a writer task, cookie and timeout bookkeeping) costs about
100 us of CPU, more than the rest of the runner together. A run sends one kind of request to
one origin, so a pool of keep-alive connections parsed by httptools (the llhttp binding uvicorn
uses) does the same work for a fraction of that. What a provider may send is handled:
Content-Length, chunked and close-delimited bodies, gzip and deflate, keep-alive and
`Connection: close`, informational 1xx answers, TLS.

Plain asyncio, not anyio, because anyio offers streams, not protocols, and streams are the
per-request overhead this module exists to avoid; the engine only runs on asyncio.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from types import TracebackType
from typing import Self, cast
from urllib.parse import urlsplit

import httptools

from runner.client import USER_AGENT, ClientConfig, RawResponse, TransportError
from runner.config import base_url_problem, endpoint_url
from runner.sse import IncompleteStream, assemble_stream

# Limits on one answer: a chat completion is far smaller, and a broken or hostile server must
# not run the process out of memory (aiohttp's field limit is 8 KiB; ours is for the block).
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 2**20

# An idle connection older than this is closed rather than reused: servers drop idle
# connections after a few seconds (uvicorn and Node after 5), and a request written into one
# that is closing fails, or worse, may have been read.
IDLE_S = 4.0

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


class _Lost(Exception):
    """The connection ended, or broke the protocol, before a whole response arrived."""


class _TooLarge(Exception):
    """The answer's headers or body exceed the limits."""


class _TimedOut(Exception):
    """No whole response within the request timeout."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, the answer parsed as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._header_bytes = 0
        self._body_bytes = 0
        self._headers_done = False
        self._close_delimited = False
        self.keep_alive = True
        self.closed = False
        self.idle_since = loop.time()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self._expecting():
            # Bytes nobody asked for: whatever follows on this connection cannot be matched
            # to a request any more, so it is never used again.
            self.abort()
            return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(_Lost(f"malformed HTTP response ({type(exc).__name__}: {exc})"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self._expecting():
            return
        if exc is None and self._headers_done and self._close_delimited:
            # No length and not chunked: the body is whatever came before a clean close.
            self._complete()
            return
        reason = f"{type(exc).__name__}: {exc}" if exc else "the server closed the connection"
        self._fail(_Lost(f"{reason} before a whole response arrived"))

    # -- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._too_large(f"headers over {MAX_HEADER_BYTES // 1024} KiB")
            return
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._headers_done = True
        length = coding = False
        for name, value in self._headers:
            lowered = name.lower()
            length = length or lowered == b"content-length"
            if lowered == b"transfer-encoding":
                coding = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
        self._close_delimited = not length and not coding

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > MAX_BODY_BYTES:
            self._too_large(f"a body over {MAX_BODY_BYTES // 2**20} MiB")
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self._expecting():
            # A second answer in the same bytes as the first: the connection is out of step.
            self.abort()
            return
        if 100 <= self._parser.get_status_code() < 200:
            # An informational answer comes before the real one.
            self._reset()
            return
        self.keep_alive = self._parser.should_keep_alive()
        self._complete()

    # -- the exchange ----------------------------------------------------------------------

    def _expecting(self) -> bool:
        return self._waiter is not None and not self._waiter.done()

    def _reset(self) -> None:
        self._headers, self._body = [], []
        self._header_bytes = self._body_bytes = 0
        self._headers_done = self._close_delimited = False

    def _complete(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            answer = (self._parser.get_status_code(), self._headers, b"".join(self._body))
            self._waiter.set_result(answer)

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    def _too_large(self, what: str) -> None:
        self._fail(_TooLarge(f"the answer has {what}"))
        self.abort()

    def time_out(self) -> None:
        """The request took too long: fail it and drop the connection."""
        self._fail(_TimedOut())
        self.abort()

    async def exchange(self, request: bytes) -> Answer:
        """Send one request; return its whole answer: status, raw headers, body."""
        assert self._transport is not None
        self._reset()
        waiter: asyncio.Future[Answer] = self._loop.create_future()
        self._waiter = waiter
        self._transport.write(request)
        try:
            return await waiter
        finally:
            self._waiter = None
            self.idle_since = self._loop.time()

    def abort(self) -> None:
        """Drop the connection at once."""
        self.closed = True
        if self._transport is not None:
            self._transport.abort()


class Http11Transport:
    """`Transport` over a pool of keep-alive HTTP/1.1 connections to one origin."""

    def __init__(self, config: ClientConfig) -> None:
        problem = base_url_problem(config.base_url)
        if problem is not None:
            raise ValueError(f"the base URL {problem}")
        url = urlsplit(endpoint_url(config.base_url, "/chat/completions"))
        self._config = config
        assert url.hostname is not None  # base_url_problem checked it
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if url.scheme == "https" else None
        target = url.path + (f"?{url.query}" if url.query else "")
        self._head = (
            f"POST {target} HTTP/1.1\r\n"
            f"Host: {url.netloc}\r\n"  # base_url_problem refused credentials in it
            f"Authorization: Bearer {config.api_key}\r\n"
            "Content-Type: application/json\r\n"
            "Accept: application/json\r\n"
            "Accept-Encoding: gzip, deflate\r\n"
            f"User-Agent: {USER_AGENT}\r\n"
            "Content-Length: "
        ).encode("latin-1")
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(self._config.max_connections)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for conn in [*self._idle, *self._busy]:
            conn.abort()
        self._idle.clear()
        self._busy.clear()

    async def send(self, body: bytes) -> RawResponse:
        """POST the body to /chat/completions; streamed answers are reassembled."""
        assert self._slots is not None, "use Http11Transport as an async context manager"
        request = self._head + b"%d\r\n\r\n" % len(body) + body
        async with self._slots:
            conn = await self._connection()
            status, headers, raw = await self._timed(conn, request)
            if conn.keep_alive and not conn.closed:
                self._idle.append(conn)
            else:
                conn.abort()
        return _response(status, headers, raw)

    async def _timed(self, conn: _Connection, request: bytes) -> Answer:
        assert self._loop is not None
        timer = self._loop.call_later(self._config.timeout_s, conn.time_out)
        self._busy.add(conn)
        try:
            return await conn.exchange(request)
        except _TimedOut:
            raise TransportError(
                "timeout", f"no answer within {self._config.timeout_s:g}s"
            ) from None
        except _Lost as exc:
            raise TransportError("connection_error", str(exc)) from None
        except _TooLarge as exc:
            raise TransportError("response_too_large", str(exc)) from None
        except BaseException:
            # Cancelled halfway: what is left on the wire belongs to no one.
            conn.abort()
            raise
        finally:
            timer.cancel()
            self._busy.discard(conn)

    async def _connection(self) -> _Connection:
        assert self._loop is not None
        loop = self._loop
        stale_before = loop.time() - IDLE_S
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and conn.idle_since >= stale_before:
                return conn
            conn.abort()
        # --timeout bounds connecting too, when it is the shorter of the two.
        connect_s = min(self._config.connect_timeout_s, self._config.timeout_s)
        try:
            async with asyncio.timeout(connect_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except TimeoutError:
            raise TransportError("timeout", f"no connection within {connect_s:g}s") from None
        except OSError as exc:
            raise TransportError("connection_error", f"{type(exc).__name__}: {exc}") from None
        return conn


def _response(status: int, raw_headers: list[tuple[bytes, bytes]], body: bytes) -> RawResponse:
    headers: dict[str, str] = {}
    for name, value in raw_headers:
        headers[name.decode("latin-1").lower()] = value.decode("latin-1")
    encodings = headers.get("content-encoding", "").strip().lower()
    if encodings not in ("", "identity"):
        body = _decoded(body, encodings)
    if status == 200 and "text/event-stream" in headers.get("content-type", ""):
        try:
            body = assemble_stream(body)
        except IncompleteStream as exc:
            raise TransportError("incomplete_stream", str(exc)) from None
    return RawResponse(status, headers, body)


def _decoded(body: bytes, encodings: str) -> bytes:
    # Codings apply in the order listed, so they come off in reverse.
    for coding in reversed([c.strip() for c in encodings.split(",")]):
        if coding in ("", "identity"):
            continue
        if coding not in ("gzip", "x-gzip", "deflate"):
            raise TransportError("connection_error", f"unsupported Content-Encoding {coding!r}")
        body = _inflated(body, coding)
    return body


def _inflated(body: bytes, coding: str) -> bytes:
    # 47 reads a gzip or zlib header; servers also send "deflate" as a bare stream (-15).
    error = ""
    for wbits in (47, -15):
        inflater = zlib.decompressobj(wbits)
        try:
            plain = inflater.decompress(body, MAX_BODY_BYTES)
        except zlib.error as exc:
            error = str(exc)
            continue
        if inflater.unconsumed_tail:
            raise TransportError(
                "response_too_large", f"the answer inflates past {MAX_BODY_BYTES // 2**20} MiB"
            )
        if not inflater.eof:
            error = "the compressed data ends early"
            continue
        return plain
    raise TransportError("connection_error", f"corrupt {coding} body: {error}")
