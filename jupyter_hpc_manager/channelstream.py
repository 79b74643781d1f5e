"""A tornado stream over a paramiko channel, so the proxy's HTTP client reads the IDE's answer
straight from the SSH transport on the event loop: no socket hop and no pump threads on the
download path (where the bytes are).

paramiko gives a channel a pipe that turns readable when data arrives (fileno()); reads use
it. A channel's fileno is never 'writable', so a write that meets a full SSH window waits in a
small thread for the window to open and then resumes the stream's writing on the loop."""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import paramiko
from tornado.ioloop import IOLoop
from tornado.iostream import BaseIOStream
from tornado.tcpclient import TCPClient

READ_CHUNK = 4 * 1024 * 1024


class ChannelStream(BaseIOStream):
    def __init__(self, chan: paramiko.Channel, **kwargs: Any) -> None:
        self.chan = chan
        self._fd = chan.fileno()  # creates paramiko's readiness pipe before any data arrives
        chan.settimeout(0.0)
        self._waiting = False
        self._loop = IOLoop.current()
        # paramiko's channel buffer drops what is read from its front, copying the rest: few
        # large reads cost far less than many 64 KiB ones.
        kwargs.setdefault("read_chunk_size", READ_CHUNK)
        super().__init__(**kwargs)

    def fileno(self) -> int:
        return self._fd

    def close_fd(self) -> None:
        self.chan.close()

    def get_fd_error(self) -> Exception | None:
        return None

    def read_from_fd(self, buf: bytearray | memoryview) -> int | None:
        try:
            data = self.chan.recv(len(buf))
        except TimeoutError:
            return None  # nothing buffered yet
        n = len(data)
        buf[:n] = data
        return n  # 0: the channel is closed, which the stream reads as end of stream

    def write_to_fd(self, data: memoryview) -> int:
        try:
            return self.chan.send(bytes(data))
        except TimeoutError:
            self._wait_for_window()
            return 0

    def _wait_for_window(self) -> None:
        if self._waiting:
            return
        self._waiting = True

        def wait() -> None:
            while not (self.chan.send_ready() or self.chan.closed):
                time.sleep(0.005)
            self._loop.add_callback(self._window_opened)

        threading.Thread(target=wait, daemon=True, name="channel-window").start()

    def _window_opened(self) -> None:
        self._waiting = False
        if not self.closed():
            self._handle_write()


class ChannelTCPClient(TCPClient):
    """What tornado's HTTP client calls to connect: a new channel through a session's tunnel
    instead of a TCP connection."""

    def __init__(self, open_channel: Callable[[str], Awaitable[paramiko.Channel]]) -> None:
        super().__init__()
        self._open_channel = open_channel

    # tornado's HTTP client only uses the BaseIOStream side of what connect() returns.
    async def connect(  # type: ignore[override]
                      self, host: str, port: int, af: Any = None, ssl_options: Any = None,
                      max_buffer_size: int | None = None, source_ip: str | None = None,
                      source_port: int | None = None,
                      timeout: float | datetime.timedelta | None = None) -> ChannelStream:
        chan = await self._open_channel(host)
        return ChannelStream(chan, max_buffer_size=max_buffer_size)
