"""One session's VS Code, as the rest of the server uses it: the one facade the proxy talks to.
HTTP over the tunnel's kept-alive channels, websockets over channels of their own (the same
tunnel), the health check, and code-server's session cookie: the server logs in with the job's
password and adds the cookie to every request itself; the browser never sees either."""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
import weakref
from collections.abc import AsyncIterable
from http.cookies import CookieError, SimpleCookie

from tornado import httputil

from .errors import TunnelError
from .tunnel import Tunnel
from .upstream import ChannelConnection, Response, UpstreamPool

SESSION_COOKIE = "code-server-session"
TUNNEL_DOMAIN = ".hpc-tunnel"


def tunnel_host(hpc: str) -> str:
    """The made-up Host under which the server itself talks to a cluster's IDE (health check,
    login); it never reaches DNS."""
    return f"{hpc}{TUNNEL_DOMAIN}"


class IDE:
    def __init__(self, hpc: str, job_id: str, node: str | None, tunnel: Tunnel, password: str,
                 log: logging.Logger, timeout: float = 15.0, ide_timeout: float = 60.0) -> None:
        self.hpc = hpc
        self.job_id = job_id
        self.node = node
        self.tunnel = tunnel
        self._password = password
        self.log = log
        self.timeout = timeout
        self.pool = UpstreamPool(tunnel.connect)
        self.cookie: str | None = None  # code-server's session, once logged in
        self._login = asyncio.Lock()
        # Websockets being relayed, and the health check that closes them if the IDE hangs
        # (their bytes carry no bound of their own: an editor may rightly be quiet for hours).
        self.ide_timeout = ide_timeout
        self._websockets: weakref.WeakSet[ChannelConnection] = weakref.WeakSet()
        self._watchdog: asyncio.Future[None] | None = None

    @property
    def ready(self) -> bool:
        return self.cookie is not None

    # -- for the proxy -------------------------------------------------------------------------
    def _with_session(self, headers: httputil.HTTPHeaders) -> httputil.HTTPHeaders:
        cookies = [c for c in (headers.get("Cookie"),) if c]
        headers["Cookie"] = "; ".join([*cookies, f"{SESSION_COOKIE}={self.cookie}"])
        return headers

    async def request(self, method: str, target: str, headers: httputil.HTTPHeaders,
                      body: bytes | AsyncIterable[bytes] | None = None) -> Response:
        """A request as the logged-in user (``headers`` are the caller's to give away)."""
        return await self.pool.request(method, target, self._with_session(headers), body)

    async def upgrade(self, target: str, headers: httputil.HTTPHeaders) -> Response:
        """A websocket handshake on a connection of its own: on a 101 the caller takes the
        connection over (Response.take_connection) and relays its bytes both ways."""
        return await self.pool.request("GET", target, self._with_session(headers), fresh=True)

    async def relogin(self, stale: str | None) -> None:
        """code-server forgot our session (it restarted, or the cookie expired): log in again,
        once for however many requests noticed."""
        async with self._login:
            if self.cookie == stale:
                self.log.info("jupyter-hpc-manager: logging in to VS Code on %s again (job %s)",
                              self.hpc, self.job_id)
                self.cookie = await self._log_in()

    def watch(self, conn: ChannelConnection) -> None:
        """A websocket's connection, relayed from now on: closed if the IDE stops answering."""
        conn.timeout = None
        self._websockets.add(conn)
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        """While websockets are open, ask the IDE's /healthz every half ide_timeout; one that
        is not answered within ide_timeout closes them (the browser's VS Code then says it
        lost the connection, instead of waiting on a hung one for ever)."""
        while any(not c.closed for c in self._websockets):
            await asyncio.sleep(self.ide_timeout / 2)
            if not any(not c.closed for c in self._websockets):
                return
            try:
                response = await self._call("GET", "/healthz", {}, timeout=self.ide_timeout)
                if response.code < 500:
                    continue
                why = f"HTTP {response.code}"
            except (OSError, TunnelError, asyncio.TimeoutError) as exc:
                why = getattr(exc, "message", None) or f"no answer in {self.ide_timeout:.0f} s"
            open_ = [c for c in self._websockets if not c.closed]
            self.log.warning("jupyter-hpc-manager: VS Code on %s (job %s) does not answer (%s); "
                             "closing its %d websocket(s)", self.hpc, self.job_id, why,
                             len(open_))
            for conn in open_:
                conn.close()
            return

    # -- readiness -----------------------------------------------------------------------------
    async def _call(self, method: str, target: str, headers: dict[str, str],
                    body: bytes | None = None, timeout: float | None = None) -> Response:
        async def call() -> Response:
            with await self.pool.request(method, target, httputil.HTTPHeaders(
                    {"Host": tunnel_host(self.hpc), **headers}), body) as response:
                await response.read()
                return response
        return await asyncio.wait_for(call(), timeout or self.timeout)

    async def start(self) -> bool:
        """Does code-server answer HTTP through the tunnel? Then log in. False: not yet."""
        try:
            response = await self._call("GET", "/healthz", {})
        except (OSError, TunnelError, asyncio.TimeoutError):
            return False
        if response.code != 200:
            return False
        async with self._login:
            if self.cookie is None:
                self.cookie = await self._log_in()
        return True

    async def _log_in(self) -> str:
        body = urllib.parse.urlencode({"password": self._password}).encode()
        try:
            response = await self._call(
                "POST", "/login", {"Content-Type": "application/x-www-form-urlencoded"}, body)
        except (OSError, TunnelError, asyncio.TimeoutError) as exc:
            raise TunnelError(f"Cannot reach VS Code on {self.hpc} to log in: "
                              f"{getattr(exc, 'message', exc) or 'timed out'}") from exc
        cookie = session_cookie(response.headers.get_list("Set-Cookie"))
        if response.code not in (301, 302, 303) or cookie is None:
            # Never echo the body or the password; the status says enough.
            raise TunnelError(
                f"VS Code on {self.hpc} refused the job's password (HTTP {response.code})",
                {"hpc": self.hpc, "status": response.code},
            )
        return cookie

    def close(self) -> None:
        """Ends every connection to this IDE: pooled ones and websockets."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        self.pool.close()
        self.tunnel.close()
        self.cookie = None


def session_cookie(set_cookie_headers: list[str]) -> str | None:
    for header in set_cookie_headers:
        try:
            jar: SimpleCookie = SimpleCookie(header)
        except CookieError:
            continue
        if SESSION_COOKIE in jar and jar[SESSION_COOKIE].value:
            return jar[SESSION_COOKIE].value
    return None
