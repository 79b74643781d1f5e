"""One thread per SSH connection for the paramiko calls that can block.

paramiko sends every message (channel data, a window adjustment, a close) through
``Transport._send_user_message``, which waits out a key re-exchange (every 2^29 bytes each way)
and spins in ``Packetizer.write_all`` while the TCP send buffer is full (a slow link, a stalled
login node). On the event loop, either would freeze the whole Jupyter server. So the loop only
hands buffers to the connection's own thread: a send the peer's window has room for without
waiting for it (``post``, at most 256 KiB unsent per channel: upstream.POST_LIMIT), any other
awaiting the answer (``call``), so back-pressure holds, and a transport that cannot send holds
up only its own channels.

The thread ends by itself once its transport has ended and it has nothing left to do; a job
given to an ended thread fails at once (the connection is gone), never waits. Answers go back
to the loop through its LoopWaker, which wakes it once for however many arrive meanwhile."""

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
_wakers_lock = threading.Lock()  # (apart from _lock: TransportIO.call takes both)
_workers: weakref.WeakKeyDictionary[paramiko.Transport, TransportIO] = (
    weakref.WeakKeyDictionary())


class LoopWaker:
    """Settles an event loop's futures from other threads, waking the loop once per batch.

    Each ``call_soon_threadsafe`` writes to the loop's self-pipe, which the loop then reads in a
    turn of its own; while a wake-up is on its way, whatever else arrives (another channel's
    data, a send done) goes with it."""

    _of: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopWaker] = (
        weakref.WeakKeyDictionary())

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._due: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> LoopWaker:
        with _wakers_lock:
            waker = cls._of.get(loop)
            if waker is None:
                waker = cls._of[loop] = cls(loop)
            return waker

    def settle(self, future: asyncio.Future[Any], result: Any = None,
               exc: BaseException | None = None) -> None:
        """From any thread: the future's result (or exception), unless it is done by then."""
        with self._lock:
            self._due.append((future, result, exc))
            if len(self._due) > 1:
                return  # a wake-up is on its way, and takes this along
        with contextlib.suppress(RuntimeError):  # the loop has closed: the server stopped
            self._loop.call_soon_threadsafe(self._run)

    def _run(self) -> None:
        with self._lock:
            due, self._due = self._due, []
        for future, result, exc in due:
            if future.done():
                continue  # (cancelled, or expired, meanwhile)
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)


Job = tuple[Callable[..., Any], tuple[Any, ...], LoopWaker | None, asyncio.Future[Any] | None]


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
        waker = LoopWaker.of(loop)
        with _lock:
            if self._ended:
                future.set_exception(ConnectionGone("the SSH connection has ended"))
                return future
            self._queue.put((fn, args, waker, future))
        return future

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """fn(*args) on the connection's thread, nobody waiting (a close, a window update)."""
        with _lock:
            if not self._ended:
                self._queue.put((fn, args, None, None))

    def _run(self) -> None:
        while True:
            try:
                fn, args, waker, future = self._queue.get(timeout=IDLE_CHECK)
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
                if waker is not None and future is not None:
                    waker.settle(future, None, exc)
            else:
                if waker is not None and future is not None:
                    waker.settle(future, result)


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
