"""The HTTP/1.1 transport against real servers on loopback that answer byte for byte as scripted."""

from __future__ import annotations

import asyncio
import gzip
import re
import socket
import ssl
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import orjson
import pytest
import trustme

from runner import http11
from runner.app import ApiTarget
from runner.client import ClientConfig, RawResponse, TransportError
from runner.http11 import Http11Transport
from tests.support import TEST_KEY, numbered_jobs, run

pytestmark = pytest.mark.anyio

KEY = "sk-test-http11-key"
BODY = b'{"model":"m","messages":[]}'


@dataclass
class Answer:
    """What the server does with one request: write `data`, then maybe close, reset or hang;
    `later` is written unasked 20 ms after."""

    data: bytes = b""
    close: bool = False
    hang: bool = False
    reset: bool = False
    later: bytes = b""


@dataclass
class Script:
    answers: list[Answer]
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[bytes] = field(default_factory=list)
    heads: list[bytes] = field(default_factory=list)
    url: str = ""


def ok(body: bytes = b'{"ok":true}', *headers: str) -> Answer:
    head = "".join(f"{h}\r\n" for h in headers)
    return Answer(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + head.encode()
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


async def _serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, script: Script):
    script.connections += 1
    script.open_now += 1
    script.most_open = max(script.most_open, script.open_now)
    try:
        while script.answers:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            body = await reader.readexactly(int(length.group(1)) if length else 0)
            script.heads.append(head)
            script.requests.append(body)
            answer = script.answers.pop(0)
            if answer.hang:
                await asyncio.sleep(3600)
            writer.write(answer.data)
            await writer.drain()
            if answer.reset:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            if answer.later:
                await asyncio.sleep(0.02)
                writer.write(answer.later)
            if answer.close:
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        script.open_now -= 1
        writer.close()


@asynccontextmanager
async def server(*answers: Answer, tls: ssl.SSLContext | None = None) -> AsyncIterator[Script]:
    script = Script(list(answers))
    srv = await asyncio.start_server(lambda r, w: _serve_one(r, w, script), "127.0.0.1", 0, ssl=tls)
    port = srv.sockets[0].getsockname()[1]
    host = "https://localhost" if tls else "http://127.0.0.1"
    script.url = f"{host}:{port}/v1"
    try:
        yield script
    finally:
        srv.close()


def transport(base_url: str, **config: float) -> Http11Transport:
    return Http11Transport(ClientConfig(base_url, KEY, **config))  # type: ignore[arg-type]


async def send_once(base_url: str, **config: float) -> RawResponse:
    async with transport(base_url, **config) as client:
        return await client.send(BODY)


async def test_a_content_length_answer_arrives_whole_with_lowercased_headers() -> None:
    async with server(
        ok(b'{"id":"x"}', "X-Request-ID: r-1", "X-RateLimit-Limit-Requests: 60")
    ) as script:
        response = await send_once(script.url)
    assert (response.status, response.body) == (200, b'{"id":"x"}')
    assert response.headers["x-request-id"] == "r-1"
    assert response.headers["x-ratelimit-limit-requests"] == "60"
    head = script.heads[0].decode()
    assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"Authorization: Bearer {KEY}\r\n" in head
    assert script.requests == [BODY]


async def test_a_chunked_answer_is_joined() -> None:
    chunked = Answer(
        b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5\r\n{"a":\r\n3\r\n12}\r\n0\r\n\r\n'
    )
    async with server(chunked) as script:
        response = await send_once(script.url)
    assert (response.status, response.body) == (429, b'{"a":12}')


async def test_a_body_ended_by_closing_the_connection_is_complete() -> None:
    async with server(
        Answer(b"HTTP/1.1 500 Oops\r\n\r\nplain text till close", close=True)
    ) as script:
        response = await send_once(script.url)
    assert (response.status, response.body) == (500, b"plain text till close")


@pytest.mark.parametrize(
    ("encoding", "packed"),
    [
        ("gzip", gzip.compress(b'{"z":1}')),
        ("deflate", zlib.compress(b'{"z":1}')),
        ("deflate", zlib.compress(b'{"z":1}')[2:-4]),  # a bare deflate stream, as some send
    ],
)
async def test_compressed_answers_are_decoded(encoding: str, packed: bytes) -> None:
    async with server(ok(packed, f"Content-Encoding: {encoding}")) as script:
        response = await send_once(script.url)
    assert response.body == b'{"z":1}'


async def test_an_unknown_or_corrupt_encoding_is_a_transport_error() -> None:
    answers = ok(b"xx", "Content-Encoding: br"), ok(b"xx", "Content-Encoding: gzip")
    async with server(*answers) as script, transport(script.url) as client:
        with pytest.raises(TransportError, match="unsupported Content-Encoding 'br'"):
            await client.send(BODY)
        with pytest.raises(TransportError, match="corrupt gzip body"):
            await client.send(BODY)


async def test_an_informational_answer_before_the_real_one_is_skipped() -> None:
    early = ok(b'{"final":true}')
    early.data = b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + early.data
    async with server(early) as script:
        response = await send_once(script.url)
    assert (response.status, response.body) == (200, b'{"final":true}')
    assert "link" not in response.headers


async def test_one_connection_carries_many_requests() -> None:
    async with server(ok(), ok(), ok()) as script, transport(script.url) as client:
        for _ in range(3):
            assert (await client.send(BODY)).status == 200
    assert (script.connections, len(script.requests)) == (1, 3)


async def test_connection_close_is_honoured() -> None:
    async with (
        server(ok(b"{}", "Connection: close"), ok()) as script,
        transport(script.url) as client,
    ):
        await client.send(BODY)
        await client.send(BODY)
    assert script.connections == 2


async def test_an_idle_connection_the_server_dropped_is_replaced_without_a_second_send() -> None:
    # The server closes after answering without saying so; the next request meets a dead
    # connection before any answer, so it goes out once, on a fresh connection.
    async with (
        server(Answer(ok().data, close=True), ok(b'{"second":1}')) as script,
        transport(script.url) as client,
    ):
        await client.send(BODY)
        await anyio.sleep(0.05)
        response = await client.send(BODY)
    assert response.body == b'{"second":1}'
    assert (script.connections, len(script.requests)) == (2, 2)


async def test_a_reused_connection_closed_unanswered_is_an_error_not_a_silent_resend() -> None:
    # The server may have read the request before closing: sending it again unseen could pay
    # twice without the run counting it, so the engine's counted retry handles it instead.
    async with server(ok(), Answer(close=True), ok()) as script, transport(script.url) as client:
        await client.send(BODY)
        with pytest.raises(TransportError) as caught:
            await client.send(BODY)
    assert caught.value.code == "connection_error"
    assert len(script.requests) == 2


async def test_a_connection_idle_too_long_is_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http11, "IDLE_S", 0.05)
    async with server(ok(), ok()) as script, transport(script.url) as client:
        await client.send(BODY)
        await anyio.sleep(0.1)
        await client.send(BODY)
    assert script.connections == 2


async def test_a_fresh_connection_closed_before_any_answer_is_not_retried() -> None:
    async with server(Answer(close=True), ok()) as script:
        with pytest.raises(TransportError, match="closed the connection"):
            await send_once(script.url)
    assert len(script.requests) == 1


async def test_a_connection_lost_mid_answer_is_an_error_and_not_resent() -> None:
    partial = Answer(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"cut', close=True)
    async with server(partial, ok()) as script:
        with pytest.raises(TransportError) as caught:
            await send_once(script.url)
    assert caught.value.code == "connection_error"
    assert "before a whole response arrived" in caught.value.message
    assert len(script.requests) == 1


async def test_a_malformed_answer_is_a_connection_error() -> None:
    async with server(Answer(b"NOT HTTP AT ALL\r\n\r\n")) as script:
        with pytest.raises(TransportError, match="malformed HTTP response"):
            await send_once(script.url)


async def test_no_answer_within_the_timeout_is_a_timeout_and_the_next_send_works() -> None:
    async with (
        server(Answer(hang=True), ok()) as script,
        transport(script.url, timeout_s=0.3) as client,
    ):
        with anyio.fail_after(5):
            with pytest.raises(TransportError) as caught:
                await client.send(BODY)
            assert caught.value.code == "timeout"
            assert (await client.send(BODY)).status == 200
    assert script.connections == 2


async def test_a_refused_connection_is_a_connection_error() -> None:
    async with server() as script:
        pass  # closed again: nothing listens on the port now
    with pytest.raises(TransportError) as caught:
        await send_once(script.url)
    assert caught.value.code == "connection_error"
    assert KEY not in caught.value.message


async def test_a_cancelled_request_does_not_leave_its_connection_in_the_pool() -> None:
    async with server(Answer(hang=True), ok()) as script, transport(script.url) as client:
        with anyio.move_on_after(0.2):
            await client.send(BODY)
        assert (await client.send(BODY)).status == 200
    assert script.connections == 2


async def test_connections_never_exceed_the_limit() -> None:
    answers = [ok() for _ in range(6)]
    async with (
        server(*answers) as script,
        transport(script.url, max_connections=2) as client,
        anyio.create_task_group() as tg,
    ):
        for _ in range(6):
            tg.start_soon(client.send, BODY)
    assert script.most_open <= 2
    assert len(script.requests) == 6


async def test_a_streamed_answer_is_reassembled_and_a_cut_stream_is_reported() -> None:
    event = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    piece = event | {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
    end = event | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    sse = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in (piece, end))
    whole = ok(sse + b"data: [DONE]\n\n", "Content-Type: text/event-stream")
    cut = ok(b"data: " + orjson.dumps(piece) + b"\n\n", "Content-Type: text/event-stream")
    async with server(whole, cut) as script, transport(script.url) as client:
        body = orjson.loads((await client.send(BODY)).body)
        assert body["choices"][0]["message"]["content"] == "hi"
        with pytest.raises(TransportError) as caught:
            await client.send(BODY)
    assert caught.value.code == "incomplete_stream"


async def test_tls_with_a_ca_named_by_ssl_cert_file(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_tls)
    with ca.cert_pem.tempfile() as ca_file:
        monkeypatch.setenv("SSL_CERT_FILE", ca_file)
        async with server(ok(b'{"secure":1}'), tls=server_tls) as script:
            response = await send_once(script.url)
    assert response.body == b'{"secure":1}'


async def test_tls_refuses_a_certificate_no_trusted_ca_signed() -> None:
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("localhost").configure_cert(server_tls)
    async with server(ok(), tls=server_tls) as script:
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            await send_once(script.url)
    assert script.requests == []


async def test_a_second_answer_in_the_same_bytes_is_not_mixed_into_the_first() -> None:
    two = ok(b'{"first":1}').data + b"HTTP/1.1 500 Oops\r\nContent-Length: 2\r\n\r\n{}"
    async with server(Answer(two), ok(b'{"next":1}')) as script, transport(script.url) as client:
        first = await client.send(BODY)
        second = await client.send(BODY)
    assert (first.status, first.body) == (200, b'{"first":1}')
    # The connection that spoke out of turn was dropped: the next answer is the next one.
    assert second.body == b'{"next":1}'
    assert script.connections == 2


async def test_bytes_arriving_on_an_idle_connection_retire_it() -> None:
    stale = ok(b'{"stale":1}').data
    answers = Answer(ok(b'{"one":1}').data, later=stale), ok(b'{"two":1}')
    async with server(*answers) as script, transport(script.url) as client:
        await client.send(BODY)
        await anyio.sleep(0.1)
        response = await client.send(BODY)
    assert response.body == b'{"two":1}'
    assert script.connections == 2


async def test_the_api_key_echoed_in_a_request_id_never_reaches_results_or_database(
    tmp_path: Path,
) -> None:
    echo = ok(b'{"choices":[]}', f"X-Request-ID: Bearer {TEST_KEY}")
    async with server(echo, echo) as script:
        jobs = numbered_jobs(tmp_path / "jobs.jsonl", 2)
        report = await run(jobs, ApiTarget(script.url, TEST_KEY, mock=False), tmp_path)
    assert report.counts == {"done": 2}
    results = (tmp_path / "jobs.results.jsonl").read_bytes()
    assert b"request_id" in results
    assert TEST_KEY.encode() not in results
    assert TEST_KEY.encode() not in (tmp_path / "runner.db").read_bytes()


@pytest.mark.parametrize(
    "events", [b"data: {not json\n\ndata: [DONE]\n\n", b"data: [1,2]\n\ndata: [DONE]\n\n"]
)
async def test_a_stream_of_events_that_are_not_chunks_is_an_incomplete_stream(
    events: bytes,
) -> None:
    async with server(ok(events, "Content-Type: text/event-stream")) as script:
        with pytest.raises(TransportError) as caught:
            await send_once(script.url)
    assert caught.value.code == "incomplete_stream"


async def test_a_switch_to_another_protocol_is_a_connection_error_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    upgrade = Answer(b"HTTP/1.1 101 Switching\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n")
    async with server(upgrade) as script:
        with pytest.raises(TransportError) as caught:
            await send_once(script.url)
    assert caught.value.code == "connection_error"
    assert not [r for r in caplog.records if r.name == "asyncio"]


async def test_a_reset_in_a_body_without_a_length_is_an_error_not_an_answer() -> None:
    cut = Answer(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"partial', reset=True)
    async with server(cut) as script:
        with pytest.raises(TransportError) as caught:
            await send_once(script.url)
    assert caught.value.code == "connection_error"


async def test_a_non_chunked_transfer_coding_ends_with_the_connection() -> None:
    answer = Answer(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n{"all":1}', close=True)
    async with server(answer) as script:
        response = await send_once(script.url)
    assert response.body == b'{"all":1}'


async def test_oversized_answers_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http11, "MAX_BODY_BYTES", 1000)
    huge_header = ok(b"{}", "X-Big: " + "a" * (http11.MAX_HEADER_BYTES + 1))
    big_body = ok(b"x" * 1001)
    bomb = ok(gzip.compress(b" " * 5000), "Content-Encoding: gzip")
    async with server(huge_header, big_body, bomb) as script:
        for expected in ("headers over 64 KiB", "a body over", "inflates past"):
            with pytest.raises(TransportError, match=expected) as caught:
                await send_once(script.url)
            assert caught.value.code == "response_too_large"


async def test_a_query_in_the_base_url_stays_after_the_path() -> None:
    async with server(ok()) as script:
        await send_once(script.url + "?api-version=2024-10-21")
    assert script.heads[0].startswith(b"POST /v1/chat/completions?api-version=2024-10-21 HTTP/1.1")


@pytest.mark.parametrize("coding", ["gzip, identity", "identity, gzip", ""])
async def test_identity_in_a_list_of_codings_is_no_coding(coding: str) -> None:
    packed = gzip.compress(b'{"z":1}') if "gzip" in coding else b'{"z":1}'
    async with server(ok(packed, f"Content-Encoding: {coding}")) as script:
        response = await send_once(script.url)
    assert response.body == b'{"z":1}'
