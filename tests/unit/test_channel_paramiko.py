"""ChannelConnection replaces paramiko's private ``Channel.in_buffer``; these tests pin that
against a real paramiko client and server Transport (over a socketpair), not a fake."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import paramiko
import pytest
from paramiko.common import cMSG_CHANNEL_DATA

from jupyter_hpc_manager.ssh import CHANNEL_PACKET, CHANNEL_WINDOW
from jupyter_hpc_manager.upstream import ChannelConnection, ChannelPipe

TIMEOUT = 10.0  # for anything that should take milliseconds: a stall fails instead of hanging
USER, PASSWORD = "alice", "secret"
IDE = ("node01", 8080)


class IdeServer(paramiko.ServerInterface):
    """The login node's sshd: password auth, direct-tcpip channels only."""

    def __init__(self) -> None:
        self.destinations: list[tuple[str, int]] = []

    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_auth_password(self, username: str, password: str) -> int:
        if (username, password) == (USER, PASSWORD):
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_direct_tcpip_request(self, chanid: int, origin: tuple[str, int],
                                           destination: tuple[str, int]) -> int:
        self.destinations.append(destination)
        return paramiko.OPEN_SUCCEEDED


@dataclasses.dataclass
class Link:
    chan: paramiko.Channel  # the proxy's end, to be wrapped in a ChannelConnection
    ide: paramiko.Channel  # the server's end, played by a thread as the IDE
    client: paramiko.Transport
    server: paramiko.Transport


class Player(threading.Thread):
    """Runs the IDE's side in a thread; finish() joins it and re-raises what it raised."""

    def __init__(self, play: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._play = play
        self.result: Any = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self._play()
        except BaseException as exc:
            self.error = exc

    def finish(self) -> Any:
        self.join(TIMEOUT)
        assert not self.is_alive(), "the IDE's thread is stuck"
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture(scope="module")
def host_key() -> paramiko.PKey:
    return paramiko.ECDSAKey.generate()


@pytest.fixture
def link(host_key: paramiko.PKey) -> Iterator[Link]:
    client_sock, server_sock = socket.socketpair()
    client = paramiko.Transport(client_sock)
    server = paramiko.Transport(server_sock)
    try:
        server.add_server_key(host_key)
        interface = IdeServer()
        server.start_server(event=threading.Event(), server=interface)
        client.start_client(timeout=TIMEOUT)
        assert client.get_remote_server_key().asbytes() == host_key.asbytes()
        client.auth_password(USER, PASSWORD)
        # As jupyter_hpc_manager.ssh opens them.
        chan = client.open_channel("direct-tcpip", IDE, ("127.0.0.1", 0),
                                   window_size=CHANNEL_WINDOW,
                                   max_packet_size=CHANNEL_PACKET, timeout=TIMEOUT)
        ide = server.accept(TIMEOUT)
        assert ide is not None
        assert interface.destinations == [IDE]
        ide.settimeout(TIMEOUT)
        yield Link(chan, ide, client, server)
    finally:
        for transport in (client, server):
            transport.close()
        for transport in (client, server):
            if transport.is_alive():
                transport.join(TIMEOUT)
            assert not transport.is_alive()
        client_sock.close()
        server_sock.close()


async def read_all(conn: ChannelConnection) -> bytes:
    """Everything until the end of the stream."""
    async def read() -> bytes:
        pieces = []
        while data := await conn.recv():
            pieces.append(data)
        return b"".join(pieces)

    return await asyncio.wait_for(read(), TIMEOUT)


async def read_exactly(conn: ChannelConnection, size: int) -> bytes:
    async def read() -> bytes:
        data = b""
        while len(data) < size:
            piece = await conn.recv()
            assert piece, f"the stream ended after {len(data)} of {size} bytes"
            data += piece
        return data

    return await asyncio.wait_for(read(), TIMEOUT)


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.002)


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def ide_reads_all(ide: paramiko.Channel) -> bytes:
    pieces = []
    while data := ide.recv(1 << 20):
        pieces.append(data)
    return b"".join(pieces)


def test_a_download_many_windows_long_arrives_whole_and_in_order(link):
    # Only the reader's recv() opens the window again: if the replaced buffer broke that, the
    # server would stop after CHANNEL_WINDOW bytes and this would time out.
    body = os.urandom(5 * CHANNEL_WINDOW)

    async def main():
        conn = ChannelConnection(link.chan)
        ide = Player(lambda: (link.ide.sendall(body), link.ide.close()))
        received = await read_all(conn)
        ide.finish()
        assert len(received) == len(body)
        assert hashlib.sha256(received).digest() == hashlib.sha256(body).digest()

    asyncio.run(main())


def test_a_reader_that_does_not_read_holds_the_sender_back(link):
    # A slow browser must hold back the IDE, not fill the Jupyter server's memory.
    body = os.urandom(3 * CHANNEL_WINDOW)
    sent = [0]

    def send():
        for start in range(0, len(body), 64 * 1024):
            link.ide.sendall(body[start:start + 64 * 1024])
            sent[0] = start + 64 * 1024
        link.ide.close()

    async def main():
        conn = ChannelConnection(link.chan)
        ide = Player(send)
        await until(lambda: len(conn.pipe) >= CHANNEL_WINDOW)
        await asyncio.sleep(0.2)
        assert len(conn.pipe) == CHANNEL_WINDOW
        assert sent[0] <= CHANNEL_WINDOW
        assert ide.is_alive()
        received = await read_all(conn)
        ide.finish()
        assert received == body

    asyncio.run(main())


def test_data_that_arrived_before_the_connection_was_made_is_kept(link):
    go = threading.Event()

    def play():
        link.ide.sendall(b"early ")
        assert go.wait(TIMEOUT)
        link.ide.sendall(b"late")
        link.ide.close()

    ide = Player(play)
    wait_for(link.chan.recv_ready)  # in paramiko's own buffer, not yet read

    async def main():
        conn = ChannelConnection(link.chan)
        assert conn.buffered
        assert not conn.reusable
        go.set()
        assert await read_all(conn) == b"early late"

    asyncio.run(main())
    ide.finish()


def test_a_channel_that_ended_before_the_connection_was_made_gives_its_data_then_eof(link):
    link.ide.sendall(b"all of it")
    link.ide.close()
    wait_for(lambda: link.chan.closed)

    async def main():
        conn = ChannelConnection(link.chan)
        assert not conn.reusable
        assert await read_all(conn) == b"all of it"
        assert await conn.recv() == b""

    asyncio.run(main())


@pytest.mark.parametrize("end", ["eof", "close"])
def test_the_ide_ending_the_stream_wakes_a_waiting_recv(link, end):
    async def main():
        conn = ChannelConnection(link.chan)
        waiting = asyncio.create_task(conn.recv())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        assert conn.reusable
        if end == "eof":
            link.ide.shutdown_write()
        else:
            link.ide.close()
        assert await asyncio.wait_for(waiting, TIMEOUT) == b""
        assert not conn.reusable
        assert await conn.recv() == b""

    asyncio.run(main())


def test_losing_the_ssh_connection_wakes_a_waiting_recv(link):
    async def main():
        conn = ChannelConnection(link.chan)
        waiting = asyncio.create_task(conn.recv())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        link.server.close()  # the login node goes away
        assert await asyncio.wait_for(waiting, TIMEOUT) == b""
        assert not conn.reusable

    asyncio.run(main())


def test_closing_the_connection_wakes_a_waiting_recv(link):
    ide = Player(lambda: ide_reads_all(link.ide))

    async def main():
        conn = ChannelConnection(link.chan)
        waiting = asyncio.create_task(conn.recv())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        conn.close()
        assert await asyncio.wait_for(waiting, TIMEOUT) == b""
        assert not conn.reusable
        with pytest.raises(OSError):
            await conn.send(b"more")

    asyncio.run(main())
    assert ide.finish() == b""  # and the IDE saw its connection end


def test_an_upload_larger_than_the_ides_window_waits_for_it_and_arrives_whole(link):
    window = link.chan.out_window_size  # what the IDE's side accepts before it reads
    body = os.urandom(3 * window + 12345)
    go = threading.Event()

    def play():
        assert go.wait(TIMEOUT)  # a slow reader: nothing read until told
        data = ide_reads_all(link.ide)
        link.ide.sendall(hashlib.sha256(data).hexdigest().encode())
        link.ide.close()
        return len(data)

    async def main():
        conn = ChannelConnection(link.chan)
        ide = Player(play)
        sending = asyncio.create_task(conn.send(body))
        await asyncio.sleep(0.2)
        assert not sending.done()  # blocked on the full window, without blocking the loop
        assert link.chan.out_window_size == 0
        go.set()
        await asyncio.wait_for(sending, TIMEOUT)
        conn.shutdown_write()
        assert await read_all(conn) == hashlib.sha256(body).hexdigest().encode()
        assert ide.finish() == len(body)

    asyncio.run(main())


def test_shutdown_write_gives_the_ide_eof_and_its_answer_still_arrives(link):
    def play():
        request = ide_reads_all(link.ide)  # returns only at EOF
        link.ide.sendall(b"got " + request)
        link.ide.close()

    async def main():
        conn = ChannelConnection(link.chan)
        ide = Player(play)
        await conn.send(b"the request")
        conn.shutdown_write()
        assert await read_all(conn) == b"got the request"
        ide.finish()
        conn.shutdown_write()  # again, on a closed channel: no error

    asyncio.run(main())


def test_reusable_and_buffered_follow_what_the_ide_sent(link):
    stray, end = threading.Event(), threading.Event()

    def play():
        assert link.ide.recv(100) == b"ping"
        link.ide.sendall(b"pong")
        assert stray.wait(TIMEOUT)
        link.ide.sendall(b"stray")
        assert end.wait(TIMEOUT)
        link.ide.shutdown_write()

    async def main():
        conn = ChannelConnection(link.chan)
        ide = Player(play)
        await conn.send(b"ping")
        assert await read_exactly(conn, 4) == b"pong"
        assert conn.reusable
        assert not conn.buffered
        stray.set()
        await until(lambda: conn.buffered)
        assert not conn.reusable  # unread data: not a connection to hand to the next request
        assert await read_exactly(conn, 5) == b"stray"
        assert conn.reusable
        end.set()
        assert await read_all(conn) == b""
        assert not conn.reusable
        ide.finish()

    asyncio.run(main())


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_the_buffer_is_replaced_and_no_file_descriptor_is_made(link):
    def echo():
        while data := link.ide.recv(1 << 20):
            link.ide.sendall(data)

    ide = Player(echo)

    async def main():
        before = open_fds()
        conn = ChannelConnection(link.chan)
        assert link.chan.in_buffer is conn.pipe
        assert isinstance(conn.pipe, ChannelPipe)
        await conn.send(b"echo")
        assert await read_exactly(conn, 4) == b"echo"
        assert open_fds() == before
        # Nothing here can wake a select() on an OS pipe, so paramiko's fileno() must fail
        # instead of returning a descriptor that never becomes readable.
        with pytest.raises(NotImplementedError):
            conn.pipe.set_event(threading.Event())
        with pytest.raises(NotImplementedError):
            link.chan.fileno()
        conn.close()
        await conn.io.call(lambda: None)  # (the close runs on the connection's thread, in order)
        assert open_fds() == before  # (Channel.close closes what fileno() made)

    asyncio.run(main())
    ide.finish()


def test_an_empty_data_message_is_not_the_end_of_the_stream(link):
    # RFC 4254 allows SSH_MSG_CHANNEL_DATA with an empty string; paramiko's Channel.send never
    # sends one, so the IDE's side writes the message itself.
    def play():
        message = paramiko.Message()
        message.add_byte(cMSG_CHANNEL_DATA)
        message.add_int(link.ide.remote_chanid)
        message.add_string(b"")
        link.ide.transport._send_user_message(message)
        link.ide.sendall(b"the rest")
        link.ide.close()

    async def main():
        conn = ChannelConnection(link.chan)
        ide = Player(play)
        received = await read_all(conn)
        ide.finish()
        assert received == b"the rest"

    asyncio.run(main())

