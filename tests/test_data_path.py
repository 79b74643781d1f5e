"""The SSH data path never runs on the event loop: a login node that stalls mid-transfer (its
per-connection sshd stopped, as a hung or far-away host looks) holds up only that transfer,
while Jupyter itself and another cluster's IDE answer; a key re-exchange in the middle of a
transfer leaves every byte intact."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import threading

import pytest
from test_proxy import ide, launched  # noqa: F401 (fixtures)

from conftest import whoami

BIG = 100 * 1024 * 1024
BOUND = 30  # seconds: far past what an answer takes, only so a frozen loop fails the test


def slow_link(manager, hpc: str) -> None:
    """Make the cluster's connection behave like a slow link: a TCP send buffer smaller than
    an SSH window, so that a stalled peer fills it (on loopback the kernel's buffers would take
    a whole window, and paramiko's send would never have to wait for the socket)."""
    sock = manager.clusters[hpc].ssh.current().sock
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)


def sshd_of(manager, hpc: str) -> list[int]:
    """The sandbox sshd processes that serve this cluster's one SSH connection (found by the
    connection's local port), not the listener nor other clusters' connections."""
    transport = manager.clusters[hpc].ssh.current()
    port = transport.sock.getsockname()[1]
    out = subprocess.run(["ss", "-Htnp", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    pids = sorted({int(p) for p in re.findall(r"pid=(\d+)", out)})
    assert pids, out
    return pids


@contextlib.contextmanager
def stalled(pids: list[int]):
    """The connection's sshd stopped. A watchdog thread wakes it after BOUND seconds whatever
    happens: if the event loop froze meanwhile, that is what unfreezes it, and the test then
    fails saying so (instead of hanging)."""
    def wake() -> None:
        froze.set()
        for pid in pids:
            os.kill(pid, signal.SIGCONT)

    froze = threading.Event()
    watchdog = threading.Timer(BOUND, wake)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert not froze.is_set(), "the event loop froze while the login node was stalled"


async def answers_meanwhile(jp_fetch, other: str, job: str) -> None:
    """Jupyter's own /api/status and another cluster's IDE answer (bounded only so that a
    frozen event loop fails here instead of hanging)."""
    r = await asyncio.wait_for(jp_fetch("api", "status"), BOUND)
    assert r.code == 200 and "started" in json.loads(r.body)
    code, me = await asyncio.wait_for(whoami(jp_fetch, other), BOUND)
    assert code == 200 and me["jobId"] == job


async def test_an_upload_to_a_stalled_login_node_freezes_nothing_and_arrives_whole(
        ide, launched, manager, jp_fetch):  # noqa: F811
    replies = await launched("echo1", "echo2")
    body = os.urandom(BIG)
    slow_link(manager, "echo1")
    pids = sshd_of(manager, "echo1")
    flowing = asyncio.Event()

    async def produce(write) -> None:
        # (The proxy holds a few pieces at most: once 20 MiB have left here, most of them
        # went through the SSH connection.)
        for start in range(0, BIG, 1024 * 1024):
            await write(body[start:start + 1024 * 1024])
            if start >= 20 * 1024 * 1024:
                flowing.set()

    upload = asyncio.ensure_future(ide("echo1", "code", "echo", method="PUT",
                                       body_producer=produce, request_timeout=300,
                                       headers={"Content-Length": str(BIG)}))
    await asyncio.wait_for(flowing.wait(), BOUND)
    with stalled(pids):
        await asyncio.sleep(1.0)  # the upload fills the socket and the SSH window, and waits
        await answers_meanwhile(jp_fetch, "echo2", replies["echo2"]["jobId"])
        assert not upload.done()  # (it really was held up all along)
    r = await upload
    info = json.loads(r.body)
    assert (info["bodyLength"], info["bodySha256"]) == (BIG, hashlib.sha256(body).hexdigest())


async def test_a_download_from_a_stalled_login_node_freezes_nothing_and_arrives_whole(
        ide, launched, manager, jp_fetch):  # noqa: F811
    replies = await launched("echo1", "echo2")
    slow_link(manager, "echo1")
    pids = sshd_of(manager, "echo1")
    got = hashlib.sha256()
    size = 0
    started = asyncio.Event()

    def received(chunk: bytes) -> None:
        nonlocal size
        got.update(chunk)
        size += len(chunk)
        if size >= 10 * 1024 * 1024:
            started.set()

    download = asyncio.ensure_future(ide("echo1", "code", "big", params={"n": str(BIG)},
                                         streaming_callback=received, request_timeout=300))
    await asyncio.wait_for(started.wait(), BOUND)
    with stalled(pids):
        await asyncio.sleep(1.0)
        held = size
        await answers_meanwhile(jp_fetch, "echo2", replies["echo2"]["jobId"])
        assert not download.done() and size < BIG, (held, size)
    r = await download
    assert r.code == 200 and size == BIG
    # echo_ide's body is its CHUNK over and over: the same bytes, in order.
    expected = hashlib.sha256()
    chunk = _echo_chunk()
    left = BIG
    while left:
        piece = chunk[:min(left, len(chunk))]
        expected.update(piece)
        left -= len(piece)
    assert got.hexdigest() == expected.hexdigest()


def _echo_chunk() -> bytes:
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).parent / "resources" / "echo_ide.py"
    spec = importlib.util.spec_from_file_location("echo_ide_for_test", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CHUNK


@pytest.mark.parametrize("direction", ["download", "upload"])
async def test_a_key_re_exchange_mid_transfer_keeps_every_byte(
        ide, launched, manager, caplog, direction):  # noqa: F811
    caplog.set_level(logging.DEBUG, logger="paramiko.transport")
    await launched("echo1")
    transport = manager.clusters["echo1"].ssh.current()
    # Re-key every 4 MiB each way instead of every 512 MiB.
    transport.packetizer.REKEY_BYTES = 4 * 1024 * 1024
    size = 40 * 1024 * 1024
    if direction == "upload":
        body = os.urandom(size)
        r = await ide("echo1", "code", "echo", method="PUT", body=body, request_timeout=300)
        info = json.loads(r.body)
        assert (info["bodyLength"], info["bodySha256"]) == (size,
                                                            hashlib.sha256(body).hexdigest())
    else:
        r = await ide("echo1", "code", "big", params={"n": str(size)}, request_timeout=300)
        chunk = _echo_chunk()
        assert r.code == 200 and len(r.body) == size
        assert r.body == (chunk * (size // len(chunk) + 1))[:size]
    rekeys = [rec for rec in caplog.records if "Rekeying" in rec.getMessage()]
    assert len(rekeys) >= 2, [rec.getMessage() for rec in caplog.records][-20:]
    assert transport.is_active()  # the same connection, re-keyed
