"""One thread per SSH connection for the paramiko calls that can block.

paramiko sends every message (channel data, a window adjustment, a close) through
``Transport._send_user_message``, which waits out a key re-exchange (every 2^29 bytes each way)
and spins in ``Packetizer.write_all`` while the TCP send buffer is full (a slow link, a stalled
login node). On the event loop, either would freeze the whole Jupyter server. So the loop only
hands buffers to the connection's own thread and awaits the answer: one send in flight per
channel (back-pressure), and a transport that cannot send holds up only its own channels.

The thread ends by itself once its transport has ended and it has nothing left to do; a job
given to an ended thread fails at once (the connection is gone), never waits."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any

import paramiko

IDLE_CHECK = 2.0  # seconds an idle thread waits before it looks whether its transport ended

_lock = threading.Lock()
_workers: weakref.WeakKeyDictionary[paramiko.Transport, TransportIO] = (
    weakref.WeakKeyDictionary())

Job = tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop | None,
            asyncio.Future[Any] | None]


class ConnectionGone(OSError):
    """The SSH connection ended before this could be done on it."""


class TransportIO:
    """The thread of one SSH connection (see the module's docstring)."""

    def __init__(self, transport: paramiko.Transport) -> None:
        self.transport = transport
        self._queue: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._ended = False
        self.jobs = 0  # jobs run (tests and benchmarks read it)
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"hpc-io-{id(transport):x}")
        self.thread.start()

    @classmethod
    def of(cls, transport: paramiko.Transport) -> TransportIO:
        """The thread of this connection (made on first use)."""
        with _lock:
            worker = _workers.get(transport)
            if worker is None or worker._ended:
                worker = _workers[transport] = cls(transport)
            return worker

    def call(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """fn(*args) on the connection's thread; its result (or exception) on the loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with _lock:
            if self._ended:
                future.set_exception(ConnectionGone("the SSH connection has ended"))
                return future
            self._queue.put((fn, args, loop, future))
        return future

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """fn(*args) on the connection's thread, nobody waiting (a close, a window update)."""
        with _lock:
            if not self._ended:
                self._queue.put((fn, args, None, None))

    def _run(self) -> None:
        while True:
            try:
                fn, args, loop, future = self._queue.get(timeout=IDLE_CHECK)
            except queue.Empty:
                with _lock:
                    if self._queue.empty() and not self.transport.is_active():
                        self._ended = True
                        if _workers.get(self.transport) is self:
                            del _workers[self.transport]
                        return
                continue
            self.jobs += 1
            try:
                result = fn(*args)
            except BaseException as exc:  # (handed to the caller, whatever it is)
                if loop is not None and future is not None:
                    _deliver(loop, future, None, exc)
            else:
                if loop is not None and future is not None:
                    _deliver(loop, future, result, None)


def _deliver(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any,
             exc: BaseException | None) -> None:
    def settle() -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop has closed: the server stopped
        loop.call_soon_threadsafe(settle)


class WindowSignal(threading.Condition):
    """Takes the place of a paramiko channel's ``out_buffer_cv`` (paramiko internals, pinned
    and tested like ``in_buffer``): paramiko notifies it when the peer opens its window or the
    channel closes, and this also wakes the event loop, which waits for that instead of
    polling."""

    def __init__(self, lock: Any, wake: Callable[[], None]) -> None:
        super().__init__(lock)
        self._wake = wake

    def notify_all(self) -> None:
        super().notify_all()
        self._wake()
