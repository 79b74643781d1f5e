"""HTTP/1.1 to the IDE over SSH channels, with keep-alive.

Why not tornado's HTTP client: it opens a new connection (here, a direct-tcpip channel: a round
trip through sshd) for every request, and its stream layer copies each byte several times and
allocates a fresh read buffer per read, which at hundreds of MB/s was most of the proxy's CPU.
Here the transport thread hands each SSH packet's data to the event loop as the bytes object
paramiko made, the response parser passes those same objects on (it only cuts at message
boundaries), and finished connections wait in a small pool for the next request.

Flow control is SSH's own: data leaves a channel's buffer only when the proxy asks for more
(which it does when the browser has taken what it was given), and paramiko opens the SSH window
as it does, so a slow browser holds back the IDE instead of filling the Jupyter server's memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import threading
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import paramiko
from paramiko.buffered_pipe import PipeTimeout
from paramiko.common import cMSG_CHANNEL_WINDOW_ADJUST
from tornado import httputil

from .channel_io import LoopWaker, TransportIO, WindowSignal
from .errors import IDETimeout, TunnelError

# (tornado's HTTPHeaders refuses these already; a request line is built from them, so check.)
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f]")
_BAD_NAME = re.compile(r"[\x00-\x20:\x7f]")
_BAD_VALUE = re.compile(r"[\x00\r\n]")
_DIGITS = re.compile(r"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
T = TypeVar("T")
MAX_HEAD = 64 * 1024
MAX_LINE = 4096
SEND_CHUNK = 256 * 1024
# A send this size or smaller that the IDE's SSH window already has room for is handed to the
# connection's thread without waiting for it to leave (a small request then costs no round
# trip through the event loop); no more than this is ever handed over unsent per connection.
POST_LIMIT = SEND_CHUNK
# Idle connections are closed before the IDE's own keep-alive timeout (Node's default is 5 s),
# so a request rarely meets a connection the IDE is closing; one that does is retried.
IDLE_TIMEOUT = 4.0
MAX_IDLE = 16


class _Expired(Exception):
    """A wait on the IDE outlasted its bound."""


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(_Expired())


class ChannelPipe:
    """Takes the place of a paramiko channel's input buffer (``Channel.in_buffer``).

    paramiko's own buffer copies every packet in and out of an array, and tells readers about
    data through an OS pipe; this one keeps the packets' bytes as they are and wakes the event
    loop at most once per batch. ``Channel.recv`` still reads through it (so SSH window
    adjustments are sent exactly as before), but never blocks: an empty pipe raises
    PipeTimeout, which ``recv`` turns into ``socket.timeout``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waker = LoopWaker.of(loop)
        self._lock = threading.Lock()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None

    # -- the BufferedPipe interface paramiko's Channel uses (feed/close: the transport thread) --
    def feed(self, data: bytes, first: bool = False) -> None:
        """Data that arrived (``first``: data that belongs before anything fed so far)."""
        if not data:
            return  # an empty SSH data message (RFC 4254 allows it) is not the end of the stream
        with self._lock:
            (self._chunks.appendleft if first else self._chunks.append)(data)
            self._size += len(data)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._waker.settle(waiter)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._waker.settle(waiter)

    def read(self, nbytes: int, timeout: float | None = None) -> bytes:
        with self._lock:
            if not self._chunks:
                if self._closed:
                    return b""
                raise PipeTimeout()
            chunk = self._chunks.popleft()
            if len(chunk) > nbytes:
                self._chunks.appendleft(chunk[nbytes:])
                chunk = chunk[:nbytes]
            self._size -= len(chunk)
            return chunk

    def read_ready(self) -> bool:
        with self._lock:
            return bool(self._chunks) or self._closed

    def empty(self) -> bytes:
        with self._lock:
            out = b"".join(self._chunks)
            self._chunks.clear()
            self._size = 0
            return out

    def set_event(self, event: Any) -> None:
        raise NotImplementedError("channels read by the event loop have no fileno()")

    def __len__(self) -> int:
        return self._size

    # -- the event loop's side ---------------------------------------------------------------
    def waiter(self) -> asyncio.Future[None] | None:
        """A future done once there is data or the channel has ended (None: there is now)."""
        with self._lock:
            if self._chunks or self._closed:
                return None
            waiter = self._waiter = self._loop.create_future()
        return waiter


class ChannelConnection:
    """One channel to the IDE. Data arrives in the pipe (the transport thread feeds it) and is
    read on the event loop; everything that sends an SSH message (data, a window update, EOF,
    close) runs on the connection's own thread (channel_io.py), never on the loop."""

    def __init__(self, chan: paramiko.Channel, timeout: float | None = None) -> None:
        self.chan = chan
        # How long the IDE may take to send the next piece or to take ours (None: no bound,
        # as for a websocket, which may rightly be quiet for hours).
        self.timeout = timeout
        assert chan.transport is not None  # (an open channel has its transport)
        self.io = TransportIO.of(chan.transport)
        self._loop = asyncio.get_running_loop()
        self._waker = LoopWaker.of(self._loop)
        self.pipe = ChannelPipe(self._loop)
        self.closed = False
        self._window: asyncio.Future[None] | None = None
        chan.settimeout(0.0)
        chan.out_buffer_cv = WindowSignal(chan.lock, self._window_opened)
        # paramiko internals (pinned in pyproject.toml, tested in tests/unit/
        # test_channel_paramiko.py). Nothing arrives before the first request, but move anything
        # that did, ahead of whatever the transport thread feeds meanwhile.
        old, chan.in_buffer = chan.in_buffer, self.pipe  # type: ignore[assignment]
        leftover = old.empty()
        if leftover:
            self.pipe.feed(leftover, first=True)
        if chan.closed or chan.eof_received:
            self.pipe.close()
        self._unread: bytes = b""
        self.idle_since = 0.0
        self._posted = 0  # bytes handed to the thread unawaited (only the loop adds to it)
        self._sent = 0  # of those, the bytes sent (only the thread adds to it)
        self._failed = False  # a send handed over unawaited failed: the channel is closed

    async def recv(self) -> bytes:
        """The next piece of data (b"" once the IDE closed the connection)."""
        if self._unread:
            data, self._unread = self._unread, b""
            return data
        while True:
            try:
                data = self.pipe.read(1 << 30)
            except PipeTimeout:
                waiter = self.pipe.waiter()
                if waiter is not None:
                    await self._bounded(waiter, "send its answer")
                continue
            # What paramiko's Channel.recv does after reading, less the send: count what was
            # taken, and when enough was, open the IDE's window by as much, from the thread.
            ack = self.chan._check_add_window(len(data)) if data else 0  # type: ignore[attr-defined]
            if ack > 0:
                self.io.post(_window_adjust, self.chan, ack)
            return data

    def unread(self, data: bytes) -> None:
        self._unread = data + self._unread if self._unread else data

    def take_unread(self, size: int) -> bytes | None:
        """The next ``size`` bytes if they were read already (handed back with unread())."""
        if len(self._unread) < size:
            return None
        data, self._unread = self._unread[:size], self._unread[size:]
        return data

    async def send(self, data: bytes) -> None:
        """Send it all, a piece at a time on the connection's thread; while the IDE's SSH
        window is full, wait until it opens (uploads only)."""
        if self.closed or self._failed:
            raise OSError("the channel is closed")
        # What the window has room for, less what was handed over and not yet sent (the
        # thread shrinks the window before it counts a send as done: this errs low).
        unsent = self._posted - self._sent + len(data)
        if unsent <= POST_LIMIT and unsent <= self.chan.out_window_size:
            # The thread can send it at once, so nobody needs to wait: a failure shows as the
            # channel's end (recv gives b"", the next send raises).
            self._posted += len(data)
            self.io.post(self._send_posted, data)
            return
        view = memoryview(data)
        while view:
            if self.closed or self._failed:
                raise OSError("the channel is closed")
            sent = await self._bounded(
                self.io.call(_send_some, self.chan, view[:SEND_CHUNK].tobytes()),
                "take what was sent")
            if sent is None:
                waiter = self._window_waiter()
                if waiter is not None:
                    await self._bounded(waiter, "take what was sent")
                continue
            if sent == 0:
                raise OSError("the channel is closed")
            view = view[sent:]

    async def _bounded(self, waiter: asyncio.Future[T], what: str) -> T:
        """The waiter's result; past the IDE's bound, IDETimeout and the connection closed.
        (A timer that fails the waiter: cheaper per wait than asyncio.timeout's, which also
        cancels and un-cancels the task.)"""
        if self.timeout is None:
            return await waiter
        timer = self._loop.call_later(self.timeout, _expire, waiter)
        try:
            return await waiter
        except _Expired:
            self.close()
            raise IDETimeout(f"VS Code did not {what} within {self.timeout:.0f} s") from None
        finally:
            timer.cancel()

    def _window_waiter(self) -> asyncio.Future[None] | None:
        """A future done once the IDE's window has opened (None: it has already)."""
        waiter = self._window = self._loop.create_future()
        if self.chan.send_ready() or self.chan.closed:  # (it opened before we got here)
            self._window = None
            return None
        return waiter

    def _window_opened(self) -> None:
        """From paramiko's transport thread (the channel's lock held): wake a waiting send."""
        waiter = self._window
        if waiter is not None:
            self._window = None
            self._waker.settle(waiter)

    @property
    def buffered(self) -> bool:
        return bool(self._unread) or len(self.pipe) > 0

    @property
    def reusable(self) -> bool:
        return not (self.closed or self._failed or self.chan.closed or self.chan.eof_received
                    or self._unread or len(self.pipe))

    def _send_posted(self, data: bytes) -> None:
        """On the connection's thread: all of ``data``, for which the window has room."""
        size = len(data)
        try:
            while data:  # (in pieces of at most the IDE's packet size)
                sent = self.chan.send(data)
                if sent == 0:
                    raise OSError("the channel is closed")
                data = data[sent:]
        except (OSError, EOFError, paramiko.SSHException):
            # (socket.timeout, an OSError, would be a window smaller than counted: the stream
            # has a hole, so it ends like the others.)
            self._failed = True
            _quietly(self.chan.close)
            self.pipe.close()
        finally:
            self._sent += size

    def shutdown_write(self) -> None:
        """Tell the IDE nothing more comes (EOF), while still reading what it sends."""
        self.io.post(_quietly, self.chan.shutdown_write)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.io.post(_quietly, self.chan.close)
            self.pipe.close()  # a recv waiting on the loop ends now, not when the close is sent


# -- run on the connection's thread (channel_io.TransportIO) ------------------------------------

def _send_some(chan: paramiko.Channel, data: bytes) -> int | None:
    """As much of ``data`` as the IDE's window takes now (0: the channel is closed; None: the
    window is full)."""
    try:
        sent: int = chan.send(data)
        return sent
    except TimeoutError:
        return None


def _window_adjust(chan: paramiko.Channel, ack: int) -> None:
    """The window update paramiko's Channel.recv would send (paramiko internals, pinned)."""
    m = paramiko.Message()
    m.add_byte(cMSG_CHANNEL_WINDOW_ADJUST)
    m.add_int(chan.remote_chanid)
    m.add_int(ack)
    transport = chan.transport
    if transport is not None:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            transport._send_user_message(m)  # type: ignore[attr-defined]


def _quietly(fn: Callable[[], Any]) -> None:
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        fn()


class IncompleteResponse(TunnelError):
    """The IDE closed the connection before its response ended."""


class _Stale(Exception):
    """A reused connection that the IDE had closed: the request can go again on a new one."""


class Response:
    """An upstream response whose body is read as it is needed. Release it when done: a
    complete response gives its connection back to the pool, anything else closes it."""

    def __init__(self, conn: ChannelConnection, start: httputil.ResponseStartLine,
                 headers: httputil.HTTPHeaders, method: str) -> None:
        self.conn = conn
        self.code = start.code
        self.reason = start.reason
        self.headers = headers
        self._keep_alive = start.version == "HTTP/1.1" and "close" not in _tokens(
            headers.get("Connection", ""))
        self._length: int | None = None
        self._chunked = False
        self._released = False
        self._pool: UpstreamPool | None = None
        if method == "HEAD" or self.code in (204, 304) or self.code < 200:
            self._length = 0
        elif "Transfer-Encoding" in headers:
            codings = _tokens(headers["Transfer-Encoding"])
            self._chunked = bool(codings) and codings[-1] == "chunked"
            if not self._chunked:
                self._keep_alive = False  # the body ends when the connection does
            # The framing wins over a Content-Length beside it, which is not passed on
            # (RFC 9112 6.3: the proxy sends its own framing).
            headers.pop("Content-Length", None)
        elif "Content-Length" in headers:
            self._length = _content_length(headers.get_list("Content-Length"))
        else:
            self._keep_alive = False
        self.complete = self._length == 0
        self.last = False  # is the piece just handed out the body's last? (when it is known)

    def buffered(self) -> bool:
        """Is more of the body already here (no need to tell the browser about what it has)?"""
        return self.conn.buffered

    def whole_body(self) -> bytes | None:
        """The whole body if it is here already and of a known length (else None: read it
        with body())."""
        if self.complete:
            return b"" if self._length == 0 else None
        if self._length is None or self._chunked:
            return None
        body = self.conn.take_unread(self._length)
        if body is not None:
            self.complete = self.last = True
        return body

    async def body(self) -> AsyncIterator[bytes]:
        if self.complete:
            return
        if self._chunked:
            async for data in self._chunked_body():
                yield data
        elif self._length is not None:
            async for data in self._fixed(self._length):
                yield data
        else:
            while data := await self.conn.recv():
                yield data
        self.complete = True

    async def read(self, limit: int = 1024 * 1024) -> bytes:
        parts, size = [], 0
        async for data in self.body():
            size += len(data)
            if size > limit:
                raise TunnelError("VS Code sent a larger answer than expected")
            parts.append(data)
        return b"".join(parts)

    async def _fixed(self, remaining: int) -> AsyncIterator[bytes]:
        while remaining > 0:
            data = await self.conn.recv()
            if not data:
                raise IncompleteResponse("VS Code closed the connection mid-response")
            if len(data) > remaining:
                # What follows is the chunked framing, or (after a whole response) bytes sent
                # unasked, which leave the connection unfit for reuse.
                self.conn.unread(data[remaining:])
                data = data[:remaining]
            remaining -= len(data)
            self.last = remaining == 0 and not self._chunked
            yield data

    async def _chunked_body(self) -> AsyncIterator[bytes]:
        while True:
            line = await self._line()
            text = line.split(b";", 1)[0].strip()
            if not _HEX.fullmatch(text):
                raise TunnelError("VS Code sent a malformed chunked response")
            size = int(text, 16)
            if size == 0:
                while await self._line() not in (b"\r\n", b"\n"):
                    pass  # trailers: dropped
                return
            async for data in self._fixed(size):
                yield data
            if await self._line() not in (b"\r\n", b"\n"):
                raise TunnelError("VS Code sent a malformed chunked response")

    async def _line(self) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            data = await self.conn.recv()
            if not data:
                raise IncompleteResponse("VS Code closed the connection mid-response")
            end = data.find(b"\n")
            if end >= 0:
                if end + 1 < len(data):
                    self.conn.unread(data[end + 1:])
                parts.append(data[:end + 1])
                return b"".join(parts)
            parts.append(data)
            size += len(data)
            if size > MAX_LINE:
                raise TunnelError("VS Code sent a malformed chunked response")

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self.complete and self._keep_alive and self._pool and self.conn.reusable:
            self._pool.checkin(self.conn)
        else:
            self.conn.close()

    def take_connection(self) -> ChannelConnection:
        """After a 101 answer the connection carries another protocol: the caller takes it
        over (bytes already read past the head stay in it) and closes it itself."""
        self._released = True
        return self.conn

    def close(self) -> None:
        self._keep_alive = False
        self.release()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class UpstreamPool:
    """HTTP requests to one IDE, over connections made by ``connect()`` (channels through its
    tunnel); connections a response finished with are kept a few seconds for the next request."""

    def __init__(self, connect: Callable[[], Awaitable[ChannelConnection]],
                 idle_timeout: float = IDLE_TIMEOUT, max_idle: int = MAX_IDLE) -> None:
        self._connect = connect
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self._idle: list[ChannelConnection] = []
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.opened = 0
        self.reused = 0

    async def request(self, method: str, target: str, headers: httputil.HTTPHeaders,
                      body: bytes | AsyncIterable[bytes] | None = None, *,
                      fresh: bool = False) -> Response:
        """Send a request and read the response's head; the body is read from the Response.
        ``body``: bytes, or an async iterable of pieces (streamed as they come, never retried).
        ``headers`` is the caller's to give away: the body's framing headers are set on it.
        ``fresh``: on a new connection of its own (a websocket upgrade takes it over).
        """
        streamed = body is not None and not isinstance(body, bytes)
        if isinstance(body, bytes):
            headers["Content-Length"] = str(len(body))
            headers.pop("Transfer-Encoding", None)
        elif body is None:
            headers.pop("Content-Length", None)
            headers.pop("Transfer-Encoding", None)
        chunked = streamed and "Content-Length" not in headers
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
        head = _request_head(method, target, headers)
        for attempt in (1, 2):
            conn = None if streamed or fresh else self._checkout()
            reused = conn is not None
            if conn is None:
                conn = await self._connect()
                self.opened += 1
            else:
                self.reused += 1
            try:
                response = await self._exchange(conn, method, head, body, chunked, reused)
            except _Stale:
                conn.close()
                if attempt == 2:
                    raise TunnelError("VS Code closed the connection") from None
                continue
            except BaseException:
                conn.close()
                raise
            response._pool = self
            return response
        raise AssertionError("unreachable")

    async def _exchange(self, conn: ChannelConnection, method: str, head: bytes,
                        body: bytes | AsyncIterable[bytes] | None, chunked: bool,
                        reused: bool) -> Response:
        try:
            if isinstance(body, bytes):
                await conn.send(head + body if len(body) < SEND_CHUNK else head)
                if len(body) >= SEND_CHUNK:
                    await conn.send(body)
            else:
                await conn.send(head)
                if body is not None:
                    async for piece in body:
                        if piece:
                            await conn.send(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked
                                            else piece)
                    if chunked:
                        await conn.send(b"0\r\n\r\n")
        except OSError as exc:
            if reused:
                raise _Stale() from exc
            raise TunnelError(f"Cannot send the request to VS Code: {exc}") from exc
        while True:
            start, headers = await _read_head(conn, reused)
            if start.code >= 200 or start.code == 101:
                return Response(conn, start, headers, method)
            # 1xx interim answers (100 Continue, 103 Early Hints) come before the real one.

    def _checkout(self) -> ChannelConnection | None:
        now = asyncio.get_running_loop().time()
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable and now - conn.idle_since < self.idle_timeout:
                return conn
            conn.close()
        return None

    def checkin(self, conn: ChannelConnection) -> None:
        if self._closed or len(self._idle) >= self.max_idle:
            conn.close()
            return
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        self._idle.append(conn)
        if self._timer is None:
            self._timer = loop.call_later(self.idle_timeout, self._prune)

    def _prune(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        keep = []
        for conn in self._idle:
            if conn.reusable and loop.time() - conn.idle_since < self.idle_timeout:
                keep.append(conn)
            else:
                conn.close()
        self._idle = keep
        if keep:
            self._timer = loop.call_later(self.idle_timeout, self._prune)

    @property
    def idle(self) -> int:
        return len(self._idle)

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for conn in self._idle:
            conn.close()
        self._idle.clear()


async def _read_head(conn: ChannelConnection,
                     reused: bool) -> tuple[httputil.ResponseStartLine, httputil.HTTPHeaders]:
    parts: list[bytes] = []
    size = 0
    while True:
        data = await conn.recv()
        if not data:
            if reused and size == 0:
                raise _Stale()
            raise TunnelError("VS Code closed the connection without an answer")
        # The blank line may straddle two pieces: look from just before the new one.
        if parts:
            joined = b"".join(parts) + data
            end = joined.find(b"\r\n\r\n", max(0, size - 3))
            parts, data, size = [], joined, 0
        else:
            end = data.find(b"\r\n\r\n")
        if end >= 0:
            if end + 4 < len(data):
                conn.unread(data[end + 4:])
            return _parse_head(data[:end])
        parts.append(data)
        size += len(data)
        if size > MAX_HEAD:
            raise TunnelError("VS Code sent a response head larger than 64 KiB")


def _parse_head(head: bytes) -> tuple[httputil.ResponseStartLine, httputil.HTTPHeaders]:
    first, *lines = head.decode("latin-1").split("\r\n")
    try:
        start = httputil.parse_response_start_line(first)
        # (What HTTPHeaders.parse does, less its per-line regex for LF-only line ends: the
        # head was cut at CRLFs. add() checks each name and value against RFC 9110.)
        headers = httputil.HTTPHeaders()
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon or line[0] in " \t":
                raise httputil.HTTPInputError(f"malformed header line {line[:80]!r}")
            headers.add(name, value.strip(" \t"))
    except httputil.HTTPInputError as exc:
        raise TunnelError(f"VS Code sent a malformed response: {exc}") from None
    return start, headers


def _request_head(method: str, target: str, headers: httputil.HTTPHeaders) -> bytes:
    if not target.startswith("/") or _BAD_TARGET.search(target):
        raise TunnelError(f"Cannot send the request target {target[:80]!r} to VS Code")
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in headers.get_all():
        if _BAD_NAME.search(name) or _BAD_VALUE.search(value):
            raise TunnelError(f"Cannot send the request header {name[:80]!r} to VS Code")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _tokens(value: str) -> list[str]:
    return [t.strip().lower() for t in value.split(",") if t.strip()]


def _content_length(values: list[str]) -> int:
    lengths = {v.strip() for value in values for v in value.split(",")}
    if len(lengths) != 1:
        raise TunnelError("VS Code sent conflicting Content-Length headers")
    length = lengths.pop()
    if not _DIGITS.fullmatch(length):
        raise TunnelError(f"VS Code sent a bad Content-Length: {length[:40]!r}")
    return int(length)
