"""The way to one IDE: direct-tcpip channels to its node:port through the cluster's one SSH
transport, read and written on the event loop (upstream.ChannelConnection). HTTP requests and
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
                 open_channel: Callable[[str, int], Awaitable[paramiko.Channel]]) -> None:
        self.hpc = hpc
        self.host = host
        self.port = port
        self._open_channel = open_channel
        self._channels: weakref.WeakSet[paramiko.Channel] = weakref.WeakSet()
        self._closed = False
        self.opened = 0  # channels opened to the IDE over the tunnel's life

    async def connect(self) -> ChannelConnection:
        """A new connection to the IDE (an SSH channel)."""
        if self._closed:
            raise TunnelError(f"The tunnel to {self.hpc!r} is closed")
        chan = await self._open_channel(self.host, self.port)
        self.opened += 1
        if self._closed:  # stopped while the channel was being opened
            chan.close()
            raise TunnelError(f"The tunnel to {self.hpc!r} is closed")
        self._channels.add(chan)
        return ChannelConnection(chan)

    @property
    def connections(self) -> int:
        """Channels to the IDE open now (pooled HTTP connections and websockets)."""
        return sum(1 for chan in self._channels if not chan.closed)

    def close(self) -> None:
        self._closed = True
        for chan in list(self._channels):
            chan.close()
