"""A cluster's login node: its one SSH connection (opened when first needed and shared by every
command and channel), the logins that need a person's answers, and running work over that
connection on threads of the cluster's own, never on the event loop, with a budget of exec
channels below the login node's MaxSessions.

A connection that took a person's answers is not replaced on our own when it drops (a login node
counts failed logins, and may lock the account): the transport's own end is noticed by a watcher
thread, which marks the cluster "login required". Reads never change anything."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import secrets
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import paramiko

from .config import HPCManager
from .errors import (
    ChannelRefused,
    ConnectionLost,
    HPCError,
    LockError,
    LoginFailed,
    LoginRequired,
    ValidationError,
)
from .login import LoginAttempt
from .models import LoginDone, LoginPrompt
from .ssh import CommandResult, SSHConnection

T = TypeVar("T")
REFUSED_TRIES = 3  # a command whose channel the login node refuses is asked again twice
REFUSED_PAUSE = 0.2  # seconds before the next try (times the try's number)


class SessionBudget:
    """How many exec channels run at once on one connection: at most ``limit``. A login node
    that refuses a channel (sshd's MaxSessions) has shown how many it allows: the limit comes
    down to that, and the refused command waits for a free one."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        while self.in_use >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif not waiter.cancelled():
                    self._wake()  # (woken and cancelled at once: the turn passes on)
                raise
        self.in_use += 1

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def refused(self, accepted: int) -> int:
        """A channel was refused while ``accepted`` others were open: that is what the login
        node allows (at least one). The new limit."""
        self.limit = max(1, min(self.limit, accepted))
        return self.limit

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class LoginNode:
    def __init__(self, name: str, ssh: SSHConnection, settings: HPCManager,
                 log: logging.Logger, commands: Counter[str], on_lost: Callable[[], None],
                 threads: int = 4, max_sessions: int = 8) -> None:
        self.name = name
        self.ssh = ssh
        self.settings = settings
        self.log = log
        # Threads of this cluster's own: a hung login node, or a login waiting for a person's
        # code, holds these and never another cluster's.
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix=f"hpc-{name}")
        self.sessions = SessionBudget(max_sessions)
        self._open_lock = threading.Lock()
        self.open_sessions = 0  # exec channels the login node has accepted and that run now
        self.commands = commands  # commands run on login nodes, by kind (tests count them)
        self._on_lost = on_lost  # the cluster drops what lived on the connection (the IDE)
        self._connecting: asyncio.Future[paramiko.Transport] | None = None
        # A login node that asks for a password or code: why a login is needed now (None: it
        # is not), whether the connection we hold took a person's answers, and the login under
        # way.
        self.login_required: str | None = None
        self.interactive = False
        self._login: LoginAttempt | None = None

    # -- state (reads only) --------------------------------------------------------------------
    def login_state(self) -> str | None:
        """"required", "connected" (a logged-in connection is open), or None for a cluster
        that needs no login (keys)."""
        if self.login_required is not None:
            return "required"
        return "connected" if self.interactive else None

    def need_login(self) -> None:
        if self.login_required is not None:
            raise LoginRequired(self.login_required, {"hpc": self.name, "login": "required"})

    def lost(self, why: str) -> None:
        """The logged-in connection is gone: nothing more runs here until the user logs in."""
        if self.login_required is None:
            self.log.info("jupyter-hpc-manager: %s", why)
        self.login_required = why
        self._on_lost()

    # -- logging in ----------------------------------------------------------------------------
    async def login(self, body: dict[str, Any]) -> LoginPrompt | LoginDone:
        """Start a login (no loginId) or answer its current round of prompts. Answers: the
        next round, or connected. A refusal or an expired attempt ends it (LoginFailed)."""
        if "loginId" not in body:
            if "answers" in body:
                raise ValidationError("answers need the loginId of the round they answer",
                                      {"field": "loginId"})
            return await self._start_login()
        login_id = body["loginId"]
        if not isinstance(login_id, str):
            raise ValidationError("loginId must be a string", {"field": "loginId"})
        attempt = self._login
        if (attempt is None or attempt.finished
                or not secrets.compare_digest(attempt.id.encode(), login_id.encode())):
            raise LoginFailed(f"This login to {self.name} has ended (it succeeded, was refused "
                              "or expired): start a new one", {"hpc": self.name})
        attempt.answer(body.get("answers"))
        return await self._login_step(attempt)

    async def _start_login(self) -> LoginPrompt | LoginDone:
        if self._login is not None and not self._login.finished:
            raise LockError(f"A login to {self.name} is already under way", {"hpc": self.name})
        if self.ssh.current() is not None:
            return LoginDone(self.name, True)
        attempt = LoginAttempt(self.name, asyncio.get_running_loop(),
                               self.settings.login_timeout)
        self._login = attempt
        self.log.info("jupyter-hpc-manager: logging in to %s", self.name)
        attempt.task = asyncio.ensure_future(self._blocking(self.ssh.connect, attempt))
        attempt.task.add_done_callback(_retrieve)
        return await self._login_step(attempt)

    async def _login_step(self, attempt: LoginAttempt) -> LoginPrompt | LoginDone:
        round_ = await attempt.next_round()
        if round_ is not None:
            return attempt.prompt(round_)
        assert attempt.task is not None
        try:
            transport = attempt.task.result()
        except HPCError as exc:
            self.log.info("jupyter-hpc-manager: login to %s failed: %s", self.name, exc.message)
            raise
        self.login_required = None
        self.interactive = attempt.used
        self._watch(transport)
        self.log.info("jupyter-hpc-manager: logged in to %s", self.name)
        return LoginDone(self.name, True)

    async def logout(self) -> LoginDone:
        """Close the connection (and end a login under way). A cluster that needs a login
        needs it again; one with keys reconnects when next used."""
        if self._login is not None and not self._login.finished:
            self._login.cancel()
        transport = self.ssh.current()
        if transport is not None:
            await self._blocking(self.ssh.drop, transport)
        if self.interactive or self.login_required is not None:
            self.lost(f"You logged out of {self.name}: log in again from JupyterLab to use "
                      "it. A job there keeps running.")
        else:
            self._on_lost()
        self.log.info("jupyter-hpc-manager: logged out of %s", self.name)
        return LoginDone(self.name, False)

    # -- the connection ------------------------------------------------------------------------
    async def transport(self) -> paramiko.Transport:
        """The live connection, opened if needed. Concurrent callers share one attempt (which
        runs in one executor thread and is bounded by ssh_timeout); nobody holds a lock."""
        transport = self.ssh.current()
        if transport is not None:
            return transport
        # A cluster that needs a person's answers is not tried again on our own.
        self.need_login()
        if self.interactive:
            # The watcher has not run yet, but the logged-in connection is gone all the same.
            self.lost(f"The connection to {self.name} was closed: log in again from "
                      "JupyterLab. A job there keeps running.")
            self.need_login()
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._connect())
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> paramiko.Transport:
        try:
            transport: paramiko.Transport = await self._blocking(self.ssh.connect)
        except LoginRequired as exc:
            if self.ssh.current() is None:  # (a login that succeeded meanwhile wins)
                self.lost(exc.message)
            raise
        self._watch(transport)
        return transport

    def _watch(self, transport: paramiko.Transport) -> None:
        """Tell the loop when this connection ends: paramiko's transport is a thread, and it
        ends with the connection (closed by us, by the login node, or by the network)."""
        loop = asyncio.get_running_loop()

        def wait() -> None:
            transport.join()
            with contextlib.suppress(RuntimeError):  # the loop is closed: the server stopped
                loop.call_soon_threadsafe(self._ended, transport)

        threading.Thread(target=wait, name=f"hpc-watch-{self.name}", daemon=True).start()

    def _ended(self, transport: paramiko.Transport) -> None:
        if self.ssh.current() is not None:
            return  # another connection took its place
        if self.interactive and self.login_required is None:  # (a logout said why already)
            self.lost(f"The connection to {self.name} was closed: log in again from "
                      "JupyterLab. A job there keeps running.")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(transport, *args) in the executor; a connection found dead before anything ran
        on it is replaced once."""
        for attempt in (1, 2):
            transport = await self.transport()
            try:
                result: T = await self._blocking(fn, transport, *args)
                return result
            except ConnectionLost:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args))

    async def run(self, kind: str, command: str, stdin: str | None = None) -> CommandResult:
        """One command, within the connection's budget of exec channels; a channel the login
        node refuses (or does not open in time) fails this command only, after two more tries a
        moment apart (sshd counts a session until it has handled its close, which can lag ours
        behind: a channel freed here may still count there)."""
        self.commands[kind] += 1
        for attempt in range(1, REFUSED_TRIES + 1):
            await self.sessions.acquire()
            accepted = [False]

            def opened(accepted: list[bool] = accepted) -> None:  # (in the executor thread)
                with self._open_lock:
                    self.open_sessions += 1
                accepted[0] = True

            try:
                return await self.call(self.ssh.run, command, stdin, None, opened)
            except ChannelRefused as exc:
                if attempt == REFUSED_TRIES:
                    raise
                if exc.details.get("prohibited"):
                    limit = self.sessions.refused(self.open_sessions)
                    self.log.info("jupyter-hpc-manager: the login node of %s refused a channel "
                                  "(its MaxSessions): %d commands at once from now on",
                                  self.name, limit)
            finally:
                if accepted[0]:
                    with self._open_lock:
                        self.open_sessions -= 1
                self.sessions.release()
            await asyncio.sleep(REFUSED_PAUSE * attempt)
        raise AssertionError("unreachable")

    async def open_channel(self, host: str, port: int) -> paramiko.Channel:
        return await self.call(self.ssh.open_channel, host, port)

    async def aclose(self) -> None:
        if self._login is not None and not self._login.finished:
            self._login.cancel()  # a thread waiting for answers gives up
        connecting, self._connecting = self._connecting, None
        if connecting is not None and not connecting.done():
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
        self.ssh.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a background attempt's outcome seen (the login step that reads it may be gone)."""
    if not future.cancelled():
        future.exception()
