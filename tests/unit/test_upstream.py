"""The proxy's HTTP/1.1 client: response framing over data cut anywhere (SSH packets end where
they end), keep-alive rules, and the connection pool. Connections are fakes fed scripted
bytes; the same code against real code-server is in test_proxy.py."""

from __future__ import annotations

import asyncio

import pytest
from tornado import httputil

from jupyter_hpc_manager import upstream
from jupyter_hpc_manager.errors import TunnelError


class FakeConn:
    """What the IDE sends, in the pieces it arrives in; records what is sent to it."""

    def __init__(self, pieces: list[bytes] | None = None, fail_send: bool = False,
                 replies: list[bytes] | None = None) -> None:
        self.pieces = list(pieces or [])
        self.replies = list(replies or [])  # each arrives once a request has been sent
        self._unread = b""
        self.sent = b""
        self.closed = False
        self.fail_send = fail_send
        self.idle_since = 0.0

    async def recv(self) -> bytes:
        if self._unread:
            data, self._unread = self._unread, b""
            return data
        return self.pieces.pop(0) if self.pieces else b""

    def unread(self, data: bytes) -> None:
        self._unread = data + self._unread

    def take_unread(self, size: int) -> bytes | None:
        if len(self._unread) < size:
            return None
        data, self._unread = self._unread[:size], self._unread[size:]
        return data

    async def send(self, data: bytes) -> None:
        if self.fail_send or self.closed:
            raise OSError("Socket is closed")
        self.sent += data
        if b" HTTP/1.1\r\n" in data and self.replies:
            self.pieces.append(self.replies.pop(0))

    @property
    def buffered(self) -> bool:
        return bool(self._unread or self.pieces)

    @property
    def reusable(self) -> bool:
        return not (self.closed or self.buffered)

    def close(self) -> None:
        self.closed = True


def splits(data: bytes) -> list[list[bytes]]:
    """The data cut at every position (and in single bytes)."""
    out = [[data[:i], data[i:]] for i in range(1, len(data))]
    out.append([data[i:i + 1] for i in range(len(data))])
    return out


async def respond(pieces: list[bytes], method: str = "GET", reused: bool = False):
    conn = FakeConn(pieces)
    start, headers = await upstream._read_head(conn, reused)  # type: ignore[arg-type]
    response = upstream.Response(conn, start, headers, method)  # type: ignore[arg-type]
    return conn, response


FIXED = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-A: b\r\n\r\nhello world"
CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n")


@pytest.mark.parametrize("raw", [FIXED, CHUNKED], ids=["content-length", "chunked"])
def test_a_response_cut_anywhere_reads_the_same(raw):
    async def main():
        for pieces in splits(raw):
            conn, response = await respond(pieces)
            assert response.code == 200
            assert await response.read() == b"hello world", pieces
            assert response.complete and conn.reusable  # nothing of it left behind

    asyncio.run(main())


def test_the_last_piece_of_a_known_length_body_is_marked():
    async def main():
        _, response = await respond([FIXED[:-6], FIXED[-6:-3], FIXED[-3:]])
        marks = [(piece, response.last) async for piece in response.body()]
        assert marks == [(b"hello", False), (b" wo", False), (b"rld", True)]
        _, chunked = await respond([CHUNKED])  # (a chunk's end is not the body's)
        assert [chunked.last async for _ in chunked.body()] == [False, False, False]

    asyncio.run(main())


def test_a_body_that_came_with_its_head_is_had_whole():
    async def main():
        conn, response = await respond([FIXED + CHUNKED[:70], CHUNKED[70:]])
        assert response.whole_body() == b"hello world"
        assert response.complete and response.last
        assert [piece async for piece in response.body()] == []
        start, headers = await upstream._read_head(conn, False)  # type: ignore[arg-type]
        chunked = upstream.Response(conn, start, headers, "GET")  # type: ignore[arg-type]
        assert chunked.whole_body() is None  # (chunked: read as it comes)
        assert await chunked.read() == b"hello world"
        _, cut = await respond([FIXED[:-3], FIXED[-3:]])
        assert cut.whole_body() is None  # (not all here yet)
        assert await cut.read() == b"hello world"

    asyncio.run(main())


def test_two_responses_back_to_back_on_one_connection():
    async def main():
        conn = FakeConn([FIXED + CHUNKED[:70], CHUNKED[70:]])
        for _ in range(2):
            start, headers = await upstream._read_head(conn, False)  # type: ignore[arg-type]
            response = upstream.Response(conn, start, headers, "GET")  # type: ignore[arg-type]
            assert await response.read() == b"hello world"
        assert conn.reusable

    asyncio.run(main())


def test_large_body_pieces_are_passed_on_without_copies():
    async def main():
        big = [bytes([i]) * 65536 for i in range(4)]
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (4 * 65536)
        _, response = await respond([head, *big])
        got = [piece async for piece in response.body()]
        assert all(a is b for a, b in zip(got, big, strict=True))

    asyncio.run(main())


@pytest.mark.parametrize(("raw", "method"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", "HEAD"),
    (b"HTTP/1.1 204 No Content\r\n\r\n", "GET"),
    (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", "GET"),
])
def test_responses_without_a_body(raw, method):
    async def main():
        conn, response = await respond([raw], method)
        assert response.complete and await response.read() == b""
        assert response._keep_alive and conn.reusable

    asyncio.run(main())


def test_interim_answers_are_skipped():
    async def main():
        conn = FakeConn([b"HTTP/1.1 100 Continue\r\n\r\n", FIXED])
        pool = upstream.UpstreamPool(connect(conn))
        with await pool.request("POST", "/x", httputil.HTTPHeaders(), b"body") as response:
            assert response.code == 200 and await response.read() == b"hello world"

    asyncio.run(main())


@pytest.mark.parametrize(("raw", "keep"), [
    (FIXED, True),
    (FIXED.replace(b"X-A: b", b"Connection: close"), False),
    (FIXED.replace(b"HTTP/1.1", b"HTTP/1.0"), False),
    (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", False),  # no framing: the body ends with the conn
])
def test_which_connections_are_kept(raw, keep):
    async def main():
        conn = FakeConn([raw])
        pool = upstream.UpstreamPool(connect(conn))
        with await pool.request("GET", "/", httputil.HTTPHeaders()) as response:
            await response.read()
        assert (pool.idle, conn.closed) == ((1, False) if keep else (0, True))

    asyncio.run(main())


def test_unframed_body_is_read_until_the_connection_ends():
    async def main():
        _, response = await respond([b"HTTP/1.1 200 OK\r\n\r\nuntil", b" the end"])
        assert await response.read() == b"until the end"

    asyncio.run(main())


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    b"NOT HTTP\r\n\r\n",
    # Digits only, in ASCII: int() would take a superscript two, and hex sizes like 0x5 or +1_0.
    b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nab",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+1_0\r\n0123456789abcdef\r\n0\r\n\r\n",
])
def test_malformed_responses_are_a_clear_error(raw):
    async def main():
        with pytest.raises(TunnelError, match="VS Code"):
            _, response = await respond([raw])
            await response.read()

    asyncio.run(main())


def test_a_cut_off_body_is_an_error_and_the_connection_is_not_kept():
    async def main():
        conn = FakeConn([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"])
        pool = upstream.UpstreamPool(connect(conn))
        response = await pool.request("GET", "/", httputil.HTTPHeaders())
        with pytest.raises(upstream.IncompleteResponse), response:
            await response.read()
        assert conn.closed and pool.idle == 0

    asyncio.run(main())


def test_a_head_larger_than_the_limit_is_refused():
    async def main():
        pieces = [b"HTTP/1.1 200 OK\r\n"] + [b"X-Pad: " + b"a" * 1000 + b"\r\n"] * 70
        with pytest.raises(TunnelError, match="64 KiB"):
            await respond(pieces)

    asyncio.run(main())


def connect(*conns: FakeConn):
    queue = list(conns)

    async def make() -> FakeConn:
        return queue.pop(0)
    return make


def test_requests_reuse_a_finished_connection():
    async def main():
        conn = FakeConn(replies=[FIXED, FIXED, FIXED])
        pool = upstream.UpstreamPool(connect(conn))
        for _ in range(3):
            with await pool.request("GET", "/x", httputil.HTTPHeaders()) as response:
                assert await response.read() == b"hello world"
        assert (pool.opened, pool.reused) == (1, 2)
        assert conn.sent.count(b"GET /x HTTP/1.1\r\n") == 3

    asyncio.run(main())


async def pool_after_one_answer(*conns):
    """A pool whose first connection has answered once and sits idle, ready for reuse."""
    pool = upstream.UpstreamPool(connect(*conns))
    with await pool.request("GET", "/", httputil.HTTPHeaders()) as response:
        await response.read()
    return pool


@pytest.mark.parametrize("how", ["send fails", "closed before answering"])
def test_a_reused_connection_the_ide_closed_is_retried_on_a_new_one(how):
    async def main():
        stale, fresh = FakeConn(replies=[FIXED]), FakeConn(replies=[FIXED])
        pool = await pool_after_one_answer(stale, fresh)
        if how == "send fails":
            stale.fail_send = True  # (closed in flight: it looked reusable when taken)
        with await pool.request("GET", "/again", httputil.HTTPHeaders()) as response:
            assert await response.read() == b"hello world"
        assert stale.closed and b"GET /again" in fresh.sent and pool.opened == 2

    asyncio.run(main())


def test_a_fresh_connection_closed_before_answering_is_an_error_not_a_retry():
    async def main():
        pool = upstream.UpstreamPool(connect(FakeConn([]), FakeConn([FIXED])))
        with pytest.raises(TunnelError, match="without an answer"):
            await pool.request("GET", "/", httputil.HTTPHeaders())
        assert pool.opened == 1

    asyncio.run(main())


def test_streamed_bodies_go_chunked_on_a_new_connection_and_are_never_replayed():
    async def main():
        first, second = FakeConn(replies=[FIXED]), FakeConn(replies=[FIXED])
        pool = await pool_after_one_answer(first, second)

        async def pieces():
            yield b"abc"
            yield b"defgh"

        with await pool.request("POST", "/up", httputil.HTTPHeaders(), pieces()) as r:
            await r.read()
        assert b"POST /up" in second.sent and b"POST" not in first.sent
        head, body = second.sent.split(b"\r\n\r\n", 1)
        assert b"Transfer-Encoding: chunked" in head
        assert body == b"3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n"

    asyncio.run(main())


def test_idle_connections_expire_and_dead_ones_are_not_handed_out():
    async def main():
        a, b, c = FakeConn(replies=[FIXED]), FakeConn(replies=[FIXED]), FakeConn(replies=[FIXED])
        pool = upstream.UpstreamPool(connect(a, b, c), idle_timeout=30)
        with await pool.request("GET", "/", httputil.HTTPHeaders()) as response:
            await response.read()
        a.idle_since -= 31  # idle longer than the timeout
        with await pool.request("GET", "/", httputil.HTTPHeaders()) as response:
            await response.read()
        assert a.closed and pool.opened == 2
        b.close()  # the IDE closed it while idle
        with await pool.request("GET", "/", httputil.HTTPHeaders()) as response:
            await response.read()
        assert pool.opened == 3
        pool.close()
        assert c.closed

    asyncio.run(main())


# (Header names and values with CR/LF cannot get into tornado's HTTPHeaders in the first place.)
@pytest.mark.parametrize(("target", "headers"), [
    ("/a b", {}),
    ("/a\r\nX: y", {}),
])
def test_nothing_that_could_split_the_request_is_sent(target, headers):
    async def main():
        conn = FakeConn([FIXED])
        pool = upstream.UpstreamPool(connect(conn))
        with pytest.raises(TunnelError, match="Cannot send"):
            await pool.request("GET", target, httputil.HTTPHeaders(headers))
        assert conn.sent == b""

    asyncio.run(main())


def test_a_content_length_beside_chunked_framing_is_not_passed_on():
    """RFC 9112 6.3: the chunked framing wins, and the proxy must not forward the length."""
    async def main():
        _, response = await respond([b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n"
                                     b"Transfer-Encoding: chunked\r\n\r\n"
                                     b"5\r\nhello\r\n0\r\n\r\n"])
        assert await response.read() == b"hello"
        assert "Content-Length" not in response.headers

    asyncio.run(main())
