"""Talking to the IDE through its tunnel: HTTP over pooled channels (upstream.py), the resolver
that maps a session's tunnel host name to its private UNIX socket (for websockets), the health
check, and the login that gets code-server's session cookie with the job's password (kept on
the server; the browser never sees either)."""

from __future__ import annotations

import asyncio
import socket
import urllib.parse
from collections.abc import Awaitable, Callable
from http.cookies import CookieError, SimpleCookie
from typing import Any

import paramiko
from tornado import httputil
from tornado.netutil import Resolver

from .errors import TunnelError
from .upstream import Response, UpstreamPool, channel_connector

SESSION_COOKIE = "code-server-session"
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


class IDEClient:
    """How this server talks to every IDE, through tunnels only: HTTP over channels it reads
    itself (kept alive between requests), websockets over the tunnels' private sockets."""

    def __init__(self, lookup: Callable[[str], str | None],
                 open_channel: Callable[[str], Awaitable[paramiko.Channel]],
                 timeout: float = 15.0) -> None:
        self.resolver = TunnelResolver(lookup=lookup)
        self.upstream = UpstreamPool(channel_connector(open_channel))
        self.timeout = timeout

    def url(self, hpc: str, path: str, scheme: str = "http") -> str:
        return f"{scheme}://{tunnel_host(hpc)}/{path.lstrip('/')}"

    async def request(self, hpc: str, method: str, target: str,
                      headers: httputil.HTTPHeaders | None = None, body: Any = None) -> Response:
        return await self.upstream.request(hpc, method, target,
                                           headers or httputil.HTTPHeaders(), body)

    async def _call(self, hpc: str, method: str, target: str, headers: dict[str, str],
                    body: bytes | None = None) -> tuple[Response, bytes]:
        async def call() -> tuple[Response, bytes]:
            with await self.request(hpc, method, target, httputil.HTTPHeaders(
                    {"Host": tunnel_host(hpc), **headers}), body) as response:
                return response, await response.read()
        return await asyncio.wait_for(call(), self.timeout)

    async def healthy(self, hpc: str) -> bool:
        """Does code-server answer HTTP through the tunnel?"""
        try:
            response, _ = await self._call(hpc, "GET", "/healthz", {})
        except (OSError, TunnelError, asyncio.TimeoutError):
            return False
        return response.code == 200

    async def login(self, hpc: str, password: str) -> str:
        """Log in to code-server; returns its session cookie's value."""
        body = urllib.parse.urlencode({"password": password}).encode()
        try:
            response, _ = await self._call(
                hpc, "POST", "/login",
                {"Content-Type": "application/x-www-form-urlencoded"}, body)
        except (OSError, TunnelError, asyncio.TimeoutError) as exc:
            raise TunnelError(f"Cannot reach VS Code on {hpc} to log in: "
                              f"{getattr(exc, 'message', exc) or 'timed out'}") from exc
        cookie = session_cookie(response.headers.get_list("Set-Cookie"))
        if response.code not in (301, 302, 303) or cookie is None:
            # Never echo the body or the password; the status says enough.
            raise TunnelError(
                f"VS Code on {hpc} refused the job's password (HTTP {response.code})",
                {"hpc": hpc, "status": response.code},
            )
        return cookie

    def close(self) -> None:
        self.upstream.close()


def session_cookie(set_cookie_headers: list[str]) -> str | None:
    for header in set_cookie_headers:
        try:
            jar: SimpleCookie = SimpleCookie(header)
        except CookieError:
            continue
        if SESSION_COOKIE in jar and jar[SESSION_COOKIE].value:
            return jar[SESSION_COOKIE].value
    return None
