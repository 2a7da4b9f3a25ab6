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
from runner.sse import IncompleteStream, assemble_stream


class _Lost(Exception):
    """The connection ended before a whole response arrived."""

    def __init__(self, detail: str, received: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.received = received


class _TimedOut(Exception):
    """No whole response within the request timeout."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, the answer parsed as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.status = 0
        self._headers_done = False
        self._close_delimited = False
        self._received = False
        self.keep_alive = True
        self.closed = False
        self.answered = 0

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(_Lost(f"malformed HTTP response: {exc}", received=True))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None or self._waiter.done():
            return
        if self._headers_done and self._close_delimited:
            # No length and not chunked: the body is whatever came before the close.
            self._complete()
            return
        reason = f"{type(exc).__name__}: {exc}" if exc else "the server closed the connection"
        self._fail(_Lost(f"{reason} before a whole response arrived", self._received))

    # -- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._headers_done = True
        names = {name.lower() for name, _ in self.headers}
        self._close_delimited = b"content-length" not in names and (
            b"transfer-encoding" not in names
        )

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            # An informational answer comes before the real one.
            self._reset()
            return
        self.keep_alive = self._parser.should_keep_alive()
        self._complete()

    # -- the exchange ----------------------------------------------------------------------

    def _reset(self) -> None:
        self.headers, self.body = [], []
        self._headers_done = self._close_delimited = False

    def _complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.answered += 1
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    def time_out(self) -> None:
        """The request took too long: fail it and drop the connection."""
        self._fail(_TimedOut())
        self.abort()

    async def exchange(self, request: bytes) -> None:
        """Send one request; return once its whole answer is in `status`, `headers`, `body`."""
        assert self._transport is not None
        self._reset()
        self._received = False
        self._waiter = waiter = self._loop.create_future()
        self._transport.write(request)
        await waiter

    def abort(self) -> None:
        """Drop the connection at once."""
        self.closed = True
        if self._transport is not None:
            self._transport.abort()


class Http11Transport:
    """`Transport` over a pool of keep-alive HTTP/1.1 connections to one origin."""

    def __init__(self, config: ClientConfig) -> None:
        url = urlsplit(config.base_url.rstrip("/") + "/chat/completions")
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {config.base_url}")
        self._config = config
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if url.scheme == "https" else None
        authority = url.netloc.rpartition("@")[2]
        target = url.path + (f"?{url.query}" if url.query else "")
        self._head = (
            f"POST {target} HTTP/1.1\r\n"
            f"Host: {authority}\r\n"
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
            status, headers, raw = await self._exchange(request)
        return _response(status, headers, raw)

    async def _exchange(self, request: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        for _ in range(2):
            conn = await self._connection()
            reused = conn.answered > 0
            try:
                await self._timed(conn, request)
            except _Lost as lost:
                if reused and not lost.received:
                    # The server closed an idle connection as we wrote: it never saw the
                    # request, so a fresh connection may carry it.
                    continue
                raise TransportError("connection_error", lost.detail) from None
            answer = conn.status, conn.headers, b"".join(conn.body)
            if conn.keep_alive and not conn.closed:
                self._idle.append(conn)
            else:
                conn.abort()
            return answer
        raise TransportError("connection_error", "the server closed two connections in a row")

    async def _timed(self, conn: _Connection, request: bytes) -> None:
        assert self._loop is not None
        timer = self._loop.call_later(self._config.timeout_s, conn.time_out)
        self._busy.add(conn)
        try:
            await conn.exchange(request)
        except _TimedOut:
            raise TransportError(
                "timeout", f"no answer within {self._config.timeout_s:g}s"
            ) from None
        except BaseException:
            # Cancelled or failed halfway: what is left on the wire belongs to no one.
            conn.abort()
            raise
        finally:
            timer.cancel()
            self._busy.discard(conn)

    async def _connection(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        assert self._loop is not None
        loop = self._loop
        try:
            async with asyncio.timeout(self._config.connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except TimeoutError:
            raise TransportError(
                "timeout", f"no connection within {self._config.connect_timeout_s:g}s"
            ) from None
        except OSError as exc:
            raise TransportError("connection_error", f"{type(exc).__name__}: {exc}") from None
        return conn


def _response(status: int, raw_headers: list[tuple[bytes, bytes]], body: bytes) -> RawResponse:
    headers: dict[str, str] = {}
    for name, value in raw_headers:
        headers[name.decode("latin-1").lower()] = value.decode("latin-1")
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        body = _decoded(body, encoding)
    if status == 200 and "text/event-stream" in headers.get("content-type", ""):
        try:
            body = assemble_stream(body)
        except IncompleteStream as exc:
            raise TransportError("incomplete_stream", str(exc)) from None
    return RawResponse(status, headers, body)


def _decoded(body: bytes, encoding: str) -> bytes:
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise TransportError("connection_error", f"unsupported Content-Encoding {encoding!r}")
    try:
        # 47 reads a gzip or zlib header; servers also send "deflate" as a bare stream.
        return zlib.decompress(body, 47)
    except zlib.error:
        try:
            return zlib.decompress(body, -15)
        except zlib.error as exc:
            raise TransportError("connection_error", f"corrupt {encoding} body: {exc}") from None
