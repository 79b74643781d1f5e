"""The meeting point between paramiko's transport thread and the event loop (login.py): rounds go
to the loop, answers back to the thread, an empty round is answered at once, answers must match
the prompts, and an attempt nobody answers ends at its deadline."""

from __future__ import annotations

import asyncio
import threading

import pytest

from jupyter_hpc_manager import contract
from jupyter_hpc_manager.errors import LockError, ValidationError
from jupyter_hpc_manager.login import LoginAttempt


def thread_task(loop: asyncio.AbstractEventLoop, fn) -> asyncio.Future:
    return loop.run_in_executor(None, fn)


async def test_rounds_and_answers_cross_between_thread_and_loop():
    loop = asyncio.get_running_loop()
    attempt = LoginAttempt("c", loop, timeout=10)
    handle = attempt.handler("login node u@h:22")
    got: list[list[str]] = []
    done = threading.Event()

    def server():  # what paramiko's transport thread does
        got.append(handle("", "", []))
        got.append(handle("T", "I", [("Password: ", False)]))
        got.append(handle("", "", [("Code: ", False), ("Again: ", True)]))
        done.set()

    attempt.task = thread_task(loop, server)
    first = await attempt.next_round()
    assert first is not None and first.prompts == (("Password: ", False),)
    reply = contract.login_reply(attempt.prompt(first))
    assert (reply["status"], reply["title"], reply["instructions"], reply["host"]) == (
        "prompt", "T", "I", "login node u@h:22")
    assert reply["prompts"] == [{"text": "Password: ", "echo": False}]
    assert reply["loginId"] == attempt.id and 0 < reply["expiresIn"] <= 10
    with pytest.raises(ValidationError, match="1 string"):
        attempt.answer(["a", "b"])
    with pytest.raises(ValidationError):
        attempt.answer("pw")
    attempt.answer(["pw"])
    with pytest.raises(LockError):  # answered already; the server has not asked again yet
        attempt.answer(["pw"])
    second = await attempt.next_round()
    assert second is not None and [t for t, _ in second.prompts] == ["Code: ", "Again: "]
    attempt.answer(["1", "2"])
    assert await attempt.next_round() is None  # the "connection" finished
    assert got == [[], ["pw"], ["1", "2"]] and done.is_set() and attempt.used


async def asking_for_a_code(timeout: float) -> LoginAttempt:
    """An attempt whose "server" thread has asked one round (a code) and waits."""
    loop = asyncio.get_running_loop()
    attempt = LoginAttempt("c", loop, timeout=timeout)
    handle = attempt.handler("h")
    attempt.task = thread_task(loop, lambda: handle("", "", [("Code: ", False)]))
    assert await attempt.next_round() is not None
    return attempt


async def test_an_unanswered_round_ends_the_attempt_at_its_deadline():
    attempt = await asking_for_a_code(timeout=0.3)
    with pytest.raises(EOFError):  # (paramiko's transport thread ends quietly on EOFError)
        await attempt.task
    assert attempt.expired and attempt.finished


async def test_cancel_wakes_a_waiting_thread_at_once():
    attempt = await asking_for_a_code(timeout=60)
    attempt.cancel()
    with pytest.raises(EOFError):
        await asyncio.wait_for(attempt.task, 10)
    assert not attempt.expired
