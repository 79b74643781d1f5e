"""HTTP to the IDE through its tunnel: the resolver that maps a session's tunnel host name to its
private UNIX socket, the health check, and the login that gets code-server's session cookie
with the job's password (kept on the server; the browser never sees either)."""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Awaitable, Callable
from http.cookies import CookieError, SimpleCookie
from typing import Any

import paramiko
from tornado import simple_httpclient
from tornado.httpclient import HTTPClientError, HTTPRequest, HTTPResponse
from tornado.netutil import Resolver
from tornado.simple_httpclient import SimpleAsyncHTTPClient

from .channelstream import ChannelTCPClient
from .errors import TunnelError

SESSION_COOKIE = "code-server-session"
BODY_CHUNK = 1024 * 1024
TUNNEL_DOMAIN = ".hpc-tunnel"


def tunnel_host(hpc: str) -> str:
    """The made-up host name under which a cluster's IDE is fetched; the resolver maps it to the
    tunnel's socket, so it never reaches DNS."""
    return f"{hpc}{TUNNEL_DOMAIN}"


class TunnelResolver(Resolver):
    def initialize(self, lookup: Callable[[str], str | None]) -> None:
        self.lookup = lookup

    async def resolve(self, host: str, port: int,
                      family: socket.AddressFamily = socket.AF_UNSPEC) -> list[tuple[int, Any]]:
        path = self.lookup(host[: -len(TUNNEL_DOMAIN)]) if host.endswith(TUNNEL_DOMAIN) else None
        if path is None:
            raise TunnelError(f"No tunnel for {host}")
        return [(socket.AF_UNIX, path)]


class _LargeChunkConnection(simple_httpclient._HTTPConnection):
    """Reads a response body in pieces of up to 1 MiB instead of 64 KiB: a download through
    the proxy then costs a sixteenth of the per-piece work on the event loop."""

    def _create_connection(self, stream: Any) -> Any:
        connection = super()._create_connection(stream)
        connection.params.chunk_size = BODY_CHUNK
        return connection


class _ChannelHTTPClient(SimpleAsyncHTTPClient):
    def _connection_class(self) -> type:
        return _LargeChunkConnection

    def initialize(  # type: ignore[override]
            self, open_channel: Callable[[str], Awaitable[paramiko.Channel]],
            **kwargs: Any) -> None:
        super().initialize(**kwargs)
        self.tcp_client = ChannelTCPClient(open_channel)


class IDEClient:
    """One HTTP client for every IDE this server talks to, connecting through tunnels only:
    HTTP over channels it reads itself, websockets over the tunnels' private sockets."""

    def __init__(self, lookup: Callable[[str], str | None],
                 open_channel: Callable[[str], Awaitable[paramiko.Channel]],
                 timeout: float = 15.0) -> None:
        self.resolver = TunnelResolver(lookup=lookup)
        self.http = _ChannelHTTPClient(force_instance=True, open_channel=open_channel,
                                       max_clients=256)
        self.timeout = timeout

    def url(self, hpc: str, path: str, scheme: str = "http") -> str:
        return f"{scheme}://{tunnel_host(hpc)}/{path.lstrip('/')}"

    async def healthy(self, hpc: str) -> bool:
        """Does code-server answer HTTP through the tunnel?"""
        try:
            response = await self.http.fetch(self.url(hpc, "healthz"), raise_error=False,
                                             connect_timeout=self.timeout,
                                             request_timeout=self.timeout)
        except (OSError, HTTPClientError, TunnelError):
            return False
        return response.code == 200

    async def login(self, hpc: str, password: str) -> str:
        """Log in to code-server; returns its session cookie's value."""
        body = urllib.parse.urlencode({"password": password})
        try:
            response: HTTPResponse = await self.http.fetch(HTTPRequest(
                self.url(hpc, "login"), method="POST", body=body, follow_redirects=False,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                connect_timeout=self.timeout, request_timeout=self.timeout,
            ), raise_error=False)
        except (OSError, HTTPClientError) as exc:
            raise TunnelError(f"Cannot reach VS Code on {hpc} to log in: {exc}") from exc
        cookie = session_cookie(response.headers.get_list("Set-Cookie"))
        if response.code not in (301, 302, 303) or cookie is None:
            # Never echo the body or the password; the status says enough.
            raise TunnelError(
                f"VS Code on {hpc} refused the job's password (HTTP {response.code})",
                {"hpc": hpc, "status": response.code},
            )
        return cookie

    def close(self) -> None:
        self.http.close()


def session_cookie(set_cookie_headers: list[str]) -> str | None:
    for header in set_cookie_headers:
        try:
            jar: SimpleCookie = SimpleCookie(header)
        except CookieError:
            continue
        if SESSION_COOKIE in jar and jar[SESSION_COOKIE].value:
            return jar[SESSION_COOKIE].value
    return None
