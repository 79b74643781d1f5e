"""Tunnels to the IDE: direct-tcpip channels to the IDE's node:port through the cluster's one SSH
transport, handed out directly (the proxy's HTTP client reads them on the event loop) or through
a private UNIX socket on the Jupyter host, whose every connection becomes such a channel (for
the websocket client, which only connects to addresses).

The socket lives in a 0700 folder made for this server, so no other user of the Jupyter host
can connect to it (and the IDE behind it still asks for its password). No TCP port is opened
anywhere. A dropped transport is replaced on the next connection, so tunnels come back by
themselves; close() ends every connection the tunnel carries."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import weakref

import paramiko

from .errors import HPCError, TunnelError
from .ssh import SSHConnection

BUFFER = 256 * 1024


class Tunnel:
    def __init__(self, ssh: SSHConnection, host: str, port: int, path: str,
                 log: logging.Logger) -> None:
        self.ssh = ssh
        self.host = host
        self.port = port
        self.path = path
        self.log = log
        self._closed = False
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, paramiko.Channel]] = set()
        self._channels: weakref.WeakSet[paramiko.Channel] = weakref.WeakSet()
        self.opened = 0  # channels opened to the IDE over the tunnel's life
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        os.chmod(path, 0o600)
        self._listener.listen(256)
        self._thread = threading.Thread(target=self._accept, name=f"tunnel-{self.ssh.cluster.name}",
                                        daemon=True)
        self._thread.start()

    @property
    def connections(self) -> int:
        return len(self._pairs) + len(self._channels)

    def open_channel(self) -> paramiko.Channel:
        """A channel to the IDE for a caller that reads it itself (the proxy's HTTP client);
        closed with the tunnel. Blocking: run it in an executor."""
        chan = self.ssh.open_channel(self.host, self.port)
        with self._lock:
            self.opened += 1
            if self._closed:
                chan.close()
                raise TunnelError(f"The tunnel to {self.ssh.cluster.name!r} is closed")
            self._channels.add(chan)
        return chan

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True,
                             name="tunnel-conn").start()

    def _serve(self, client: socket.socket) -> None:
        try:
            chan = self.ssh.open_channel(self.host, self.port)
        except HPCError as exc:
            self.log.warning("jupyter-hpc-manager: tunnel to %s:%s on %s: %s", self.host,
                             self.port, self.ssh.cluster.name, exc.message)
            client.close()
            return
        pair = (client, chan)
        with self._lock:
            self.opened += 1
            if self._closed:
                chan.close()
                client.close()
                return
            self._pairs.add(pair)
        down = threading.Thread(target=self._pump_down, args=pair, daemon=True,
                                name="tunnel-down")
        down.start()
        try:
            while True:
                data = client.recv(BUFFER)
                if not data:
                    chan.shutdown_write()
                    break
                chan.sendall(data)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        down.join()
        self._release(pair)

    def _pump_down(self, client: socket.socket, chan: paramiko.Channel) -> None:
        try:
            while True:
                data = chan.recv(BUFFER)
                if not data:
                    break
                client.sendall(data)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        # Whatever ended the download ends the connection for the client too.
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)

    def _release(self, pair: tuple[socket.socket, paramiko.Channel]) -> None:
        client, chan = pair
        with self._lock:
            self._pairs.discard(pair)
        chan.close()
        client.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pairs = list(self._pairs)
            channels = list(self._channels)
        # shutdown() wakes the accept() in the listener thread; close() alone may not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        for chan in channels:
            chan.close()
        for client, chan in pairs:
            chan.close()
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
