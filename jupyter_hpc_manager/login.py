"""Interactive logins to login nodes that ask for more than a key: a password, a one-time code
(TOTP, Duo-style prompts). The SSH server's prompts are relayed to the user over REST round by
round, and the answers go back to the server and nowhere else.

paramiko asks for answers from its transport thread (``Transport.auth_interactive``'s handler),
so a ``LoginAttempt`` is a meeting point between that thread and the event loop: the thread hands
each round of prompts to the loop and waits for the answers on a queue, never longer than the
attempt's deadline. Nothing here keeps an answer after handing it over; nothing logs one."""

from __future__ import annotations

import asyncio
import queue
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import LockError, ValidationError
from .models import LoginPrompt

Handler = Callable[[str, str, list[tuple[str, bool]]], list[str]]


@dataclass(frozen=True)
class Round:
    """One set of prompts from one host (the login node, or a jump host on the way)."""

    host: str
    title: str
    instructions: str
    prompts: tuple[tuple[str, bool], ...]  # (text, echo)


@dataclass
class LoginAttempt:
    hpc: str
    loop: asyncio.AbstractEventLoop
    timeout: float
    id: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    deadline: float = 0.0
    expired: bool = False
    used: bool = False  # the server asked for something (a password, a code): not keys alone
    task: asyncio.Future[Any] | None = None  # the connection being made
    _rounds: asyncio.Queue[Round] = field(default_factory=asyncio.Queue)
    _answers: queue.Queue[list[str] | None] = field(default_factory=queue.Queue)
    _asking: Round | None = None  # the round waiting for the user's answers

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.timeout

    @property
    def finished(self) -> bool:
        return self.task is not None and self.task.done()

    # -- the transport thread's side -----------------------------------------------------------
    def handler(self, host: str) -> Handler:
        """paramiko's interactive handler for one host of the connection."""
        def handle(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
            if not prompts:
                return []  # an empty round (OpenSSH's PAM sends one at the end): nothing to ask
            self.used = True
            self.loop.call_soon_threadsafe(self._rounds.put_nowait, Round(
                host, title, instructions, tuple((str(t), bool(e)) for t, e in prompts)))
            try:
                answers = self._answers.get(timeout=max(0.0, self.deadline - time.monotonic()))
            except queue.Empty:
                answers = None
                self.expired = True
            if answers is None:
                # EOFError is the one exception paramiko's transport thread ends on quietly;
                # the caller's auth_interactive then fails, and so does the attempt.
                raise EOFError("login attempt ended")
            return answers
        return handle

    def password(self, host: str, user: str) -> str:
        """For a server that offers the "password" method and not keyboard-interactive: the
        same relay, with one prompt we make ourselves (runs in the connecting thread)."""
        return self.handler(host)("", "", [(f"Password for {user}: ", False)])[0]

    # -- the event loop's side -----------------------------------------------------------------
    def answer(self, answers: Any) -> None:
        """Hand the user's answers to the round waiting for them."""
        round_ = self._asking
        if round_ is None:
            raise LockError(f"The login to {self.hpc} is not waiting for answers (they were "
                            "given; the login node has not answered yet)", {"hpc": self.hpc})
        if (not isinstance(answers, list) or not all(isinstance(a, str) for a in answers)
                or len(answers) != len(round_.prompts)):
            raise ValidationError(
                f"answers must be a list of {len(round_.prompts)} string(s), one per prompt",
                {"field": "answers", "hpc": self.hpc})
        self._asking = None
        self._answers.put(list(answers))

    async def next_round(self) -> Round | None:
        """The next round of prompts, or None once the connection attempt has finished (its
        result is the task's). Bounded by the attempt's deadline (the thread gives up then)."""
        assert self.task is not None
        getter = asyncio.ensure_future(self._rounds.get())
        try:
            done, _ = await asyncio.wait({getter, self.task},
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
        if getter in done:
            self._asking = getter.result()
            return self._asking
        return None

    def cancel(self) -> None:
        """End the attempt: a thread waiting for answers gives up at once."""
        self._asking = None
        self._answers.put(None)

    def prompt(self, round_: Round) -> LoginPrompt:
        return LoginPrompt(self.id, round_.host, round_.title, round_.instructions,
                           round_.prompts, max(0, round(self.deadline - time.monotonic())))
