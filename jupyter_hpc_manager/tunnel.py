"""The way to one IDE: direct-tcpip channels to its node:port through the cluster's one SSH
transport (upstream.ChannelConnection: read on the event loop, written by the connection's
own thread). HTTP requests and
websockets ride these same channels. Every channel a tunnel opened is closed with it, so a stop
ends every connection to that IDE. No port or socket is opened anywhere on the Jupyter host."""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable

import paramiko

from .errors import TunnelError
from .upstream import ChannelConnection


class Tunnel:
    def __init__(self, hpc: str, host: str, port: int,
                 open_channel: Callable[[str, int], Awaitable[paramiko.Channel]],
                 timeout: float | None = None) -> None:
        self.hpc = hpc
        self.timeout = timeout  # the IDE's bound for each answer (ChannelConnection.timeout)
        self.host = host
        self.port = port
        self._open_channel = open_channel
        self._connections: weakref.WeakSet[ChannelConnection] = weakref.WeakSet()
        self._closed = False
        self.opened = 0  # channels opened to the IDE over the tunnel's life

    async def connect(self) -> ChannelConnection:
        """A new connection to the IDE (an SSH channel)."""
        if self._closed:
            raise TunnelError(f"The tunnel to {self.hpc!r} is closed")
        chan = await self._open_channel(self.host, self.port)
        self.opened += 1
        if self._closed:  # stopped while the channel was being opened
            ChannelConnection(chan).close()
            raise TunnelError(f"The tunnel to {self.hpc!r} is closed")
        conn = ChannelConnection(chan, self.timeout)
        self._connections.add(conn)
        return conn

    @property
    def connections(self) -> int:
        """Channels to the IDE open now (pooled HTTP connections and websockets)."""
        return sum(1 for conn in self._connections if not (conn.closed or conn.chan.closed))

    def close(self) -> None:
        self._closed = True
        for conn in list(self._connections):
            conn.close()
