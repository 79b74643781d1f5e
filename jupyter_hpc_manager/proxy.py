"""The IDE at {base_url}hpc/code/ (the active cluster) and {base_url}hpc/<cluster>/code/: HTTP
(any method, bodies streamed both ways with back-pressure) and websockets on the same URL, behind
Jupyter's login, all over channels of the session's tunnel (ide.IDE, the one facade). The
server logs in to code-server with the job's password and sends code-server's session cookie
upstream itself; the browser never sees either, and Jupyter's token and cookies never reach the
IDE. A websocket is relayed as bytes once both sides agreed to the upgrade (as nginx does), so
its frames, compression and subprotocol are the browser's and code-server's own."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from http.cookies import CookieError, SimpleCookie
from typing import Any

from jupyter_server._tz import utcnow
from jupyter_server.auth.decorator import authorized
from jupyter_server.utils import ensure_async, url_path_join
from tornado import httputil, web
from tornado.iostream import IOStream, StreamClosedError

from .base import HPCHandlerMixin
from .errors import HPCError, IDETimeout, NotFoundError, TunnelError
from .ide import IDE, SESSION_COOKIE, TUNNEL_DOMAIN
from .upstream import ChannelConnection, Response
from .wsinput import InputMeter

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
# Jupyter's own credentials stay with Jupyter.
# (Expect: tornado has answered 100-continue to the browser already.)
DROPPED_REQUEST_HEADERS = frozenset({"authorization", "cookie", "host", "expect"})
JUPYTER_COOKIE_PREFIXES = ("username-", "jupyterhub-", "_xsrf")
# How much of a download may be on its way to the browser before the proxy waits for it to be
# taken: large enough that waiting is rare, small enough that nothing is held whole.
FLUSH_BYTES = 512 * 1024
RELAY_READ = 256 * 1024
# VS Code's webviews (Markdown preview, extension views, the web worker extension host) are
# iframes of the workbench's own origin. The IDE's answers may be framed by this origin, whatever
# Jupyter's pages say (JupyterHub sets frame-ancestors 'none' for them); an answer with a CSP of
# its own keeps it.
IDE_CSP = "frame-ancestors 'self'"
# Traffic to the IDE is the server's activity (JupyterHub's idle culler reads it): the key is
# one of those jupyter_server adds up in last_activity(). Written at most once a second.
ACTIVITY_KEY = "hpc_ide_last_activity"
_END = object()
_relays: set[asyncio.Future[Any]] = set()  # websockets being relayed (kept from the GC)


def _hop_by_hop(headers: httputil.HTTPHeaders,
                also: frozenset[str] = frozenset()) -> frozenset[str]:
    """The headers not to pass on: hop-by-hop ones, those Connection names, and ``also``."""
    skip = HOP_BY_HOP | also
    if "Connection" not in headers:
        return skip
    return skip | {t.strip().lower() for t in headers["Connection"].split(",") if t.strip()}


@functools.lru_cache(maxsize=64)
def _route_prefix(base_url: str, hpc: str | None) -> str:
    parts = ["hpc", "code/"] if hpc is None else ["hpc", urllib.parse.quote(hpc, safe=""), "code/"]
    return url_path_join(base_url, *parts)


@web.stream_request_body
class IDEProxyHandler(HPCHandlerMixin):
    """One handler for HTTP and websocket requests to one cluster's IDE."""

    @property
    def content_security_policy(self) -> str:
        return IDE_CSP

    def compute_etag(self) -> None:
        """The IDE's answers carry the IDE's own validators, not one made up here."""
        return None

    def initialize(self, active: bool = False) -> None:
        self.active = active
        self._body: asyncio.Queue[Any] | None = None
        self._upstream: asyncio.Task[Any] | None = None
        self._route_prefix = ""  # this route's URL prefix, set by _split
        self._answering = False  # the IDE's answer has begun reaching the browser

    # -- where the request goes ----------------------------------------------------------------
    def _split(self, args: tuple[str, ...]) -> tuple[str | None, str]:
        """The cluster (None: the active one) and the upstream path, taken from the raw request
        path so that its encoding reaches the IDE unchanged."""
        hpc = None if self.active else args[0]
        prefix = self._route_prefix = self._prefix(hpc)  # (redirects and cookies use it too)
        raw = self.request.path
        rest = raw[len(prefix):] if raw.startswith(prefix) else (args[-1] or "")
        if not self.request.query:
            return hpc, "/" + rest
        query = [(k, v) for k, v in urllib.parse.parse_qsl(self.request.query,
                                                            keep_blank_values=True)
                 if k != "token"]  # Jupyter's token is for Jupyter
        return hpc, "/" + rest + ("?" + urllib.parse.urlencode(query) if query else "")

    def _prefix(self, hpc: str | None) -> str:
        return _route_prefix(self.base_url, hpc)

    def _upstream_headers(self, upgrade: bool = False) -> httputil.HTTPHeaders:
        """The browser's headers minus Jupyter's credentials and hop-by-hop ones (the IDE's
        session cookie is added by the IDE facade)."""
        headers = httputil.HTTPHeaders()
        skip = _hop_by_hop(self.request.headers, DROPPED_REQUEST_HEADERS)
        for name, value in self.request.headers.get_all():
            if name.lower() not in skip:
                headers.add(name, value)
        # code-server checks Origin against Host: keep the browser's Host so they agree.
        headers["Host"] = self.request.host
        cookies = [f"{name}={morsel.value}" for name, morsel in self.request.cookies.items()
                   if not name.startswith(JUPYTER_COOKIE_PREFIXES) and name != SESSION_COOKIE]
        if cookies:
            headers["Cookie"] = "; ".join(cookies)
        if upgrade:
            headers["Connection"] = "Upgrade"
            headers["Upgrade"] = "websocket"
        return headers

    # -- XSRF -------------------------------------------------------------------------------------
    def check_xsrf_cookie(self) -> None:
        """The IDE's own pages cannot send Jupyter's _xsrf token; for them a same-origin Origin
        (or Referer) is the cross-site check. Anything else needs Jupyter's XSRF token."""
        if not hasattr(self, "_jupyter_current_user"):
            return None  # too early; JupyterHandler.prepare asks again
        origin = self.request.headers.get("Origin")
        if origin and self.check_origin(origin):
            return None
        if not origin and self.request.headers.get("Referer") and self.check_referer():
            return None
        return super().check_xsrf_cookie()

    # -- HTTP --------------------------------------------------------------------------------------
    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        if self._finished or self.request.method in ("GET", "HEAD", "OPTIONS"):
            return
        # Bodies stream: the upstream request starts now, fed by data_received, so everything
        # @authenticated/@authorized check on the method must be checked here first.
        if not self.current_user:
            raise web.HTTPError(403)
        allowed = await ensure_async(self.authorizer.is_authorized(
            self, self.current_user, "execute", self.auth_resource))
        if not allowed:
            raise web.HTTPError(403, "Not authorized to use the IDE")
        self._body = asyncio.Queue(maxsize=4)
        self._upstream = asyncio.ensure_future(self._proxy(*self.path_args))

    async def data_received(self, chunk: bytes) -> None:
        if self._body is None or self._upstream is None or self._upstream.done():
            return  # the upstream request already ended (its error is reported by post())
        put = asyncio.ensure_future(self._body.put(chunk))
        await asyncio.wait([put, self._upstream], return_when=asyncio.FIRST_COMPLETED)
        put.cancel()

    async def _body_pieces(self) -> AsyncIterator[bytes]:
        assert self._body is not None
        while (chunk := await self._body.get()) is not _END:
            yield chunk

    async def _finish_streamed(self) -> None:
        assert self._body is not None and self._upstream is not None
        # The upstream request may have ended already (the IDE failed, hung past ide_timeout,
        # or went away mid-body): then nobody takes the end marker, and its error is the answer.
        put = asyncio.ensure_future(self._body.put(_END))
        await asyncio.wait([put, self._upstream], return_when=asyncio.FIRST_COMPLETED)
        put.cancel()
        await self._upstream

    @web.authenticated
    @authorized("execute")
    async def get(self, *args: str) -> None:
        if self.request.headers.get("Upgrade", "").lower() == "websocket":
            await self._websocket(*args)
        else:
            await self._proxy(*args)

    @web.authenticated
    @authorized("execute")
    async def head(self, *args: str) -> None:
        await self._proxy(*args)

    @web.authenticated
    @authorized("execute")
    async def options(self, *args: str) -> None:
        await self._proxy(*args)

    @web.authenticated
    @authorized("execute")
    async def post(self, *args: str) -> None:
        await self._finish_streamed()

    put = patch = delete = post

    async def _proxy(self, *args: str) -> None:
        hpc, path = self._split(args)
        try:
            ide = await self.manager.ide(hpc)
            self.manager.note_input(ide.hpc)  # (a request of the workbench: its user's)
            for attempt in (1, 2):
                stale = ide.cookie
                retry = await self._fetch(ide, path, replayable=self._body is None
                                          and attempt == 1)
                if not retry:
                    break
                await ide.relogin(stale)
        except HPCError as exc:
            if self._answering:
                self.log.warning("jupyter-hpc-manager: proxy to %s broke mid-response: %s",
                                 hpc or "the active cluster", exc.message)
                self.request.connection.close()  # type: ignore[union-attr]
                return
            raise
        touch(self.settings)
        if not self._finished:
            self.finish()

    async def _fetch(self, ide: IDE, path: str, replayable: bool) -> bool:
        """One upstream request; True if code-server wants a new login and it can be retried."""
        headers = self._upstream_headers()
        body: AsyncIterator[bytes] | bytes | None = None
        if self._body is not None:
            if "Content-Length" in self.request.headers or "Transfer-Encoding" in \
                    self.request.headers:
                body = self._body_pieces()
            else:
                await self._body.get()  # no body was sent: only the end marker comes
                body = b""
        try:
            response = await ide.request(self.request.method or "GET", path, headers, body)
        except (OSError, TunnelError) as exc:
            kind = IDETimeout if isinstance(exc, IDETimeout) else TunnelError
            raise kind(f"Cannot reach VS Code on {ide.hpc} (node {ide.node}): "
                       f"{getattr(exc, 'message', exc)}", {"hpc": ide.hpc}) from exc
        with response:
            if replayable and _wants_login(response.code, response.headers):
                response.close()
                return True
            await self._pass_on(response, ide)
        return False

    async def _pass_on(self, response: Response, ide: IDE) -> None:
        """The IDE's answer, streamed to the browser with back-pressure."""
        self._send_headers(response)
        whole = response.whole_body()
        if whole is not None:  # (the usual small answer: it came with its head)
            self.write(whole)
            return
        pending = 0
        try:
            async for chunk in response.body():
                self.write(chunk)
                pending += len(chunk)
                if pending >= FLUSH_BYTES:
                    # Back-pressure: read more from the IDE once the browser has this.
                    pending = 0
                    await self.flush()
                elif not (response.last or response.buffered()):
                    # Nothing more here yet: what came goes now (streams stay live). (The
                    # last piece goes with finish(), in the same write.)
                    self.flush().add_done_callback(_retrieve)
        except StreamClosedError:
            response.close()  # the browser went away; so does the upstream connection
        except OSError as exc:
            raise TunnelError(f"VS Code on {ide.hpc}: {exc}") from exc

    def _send_headers(self, response: Response) -> None:
        self._answering = True
        self.set_status(response.code, response.reason or None)
        self.clear_header("Content-Type")
        headers = response.headers
        skip = _hop_by_hop(headers) if response.code != 101 else frozenset()
        prefix = self._route_prefix
        seen: set[str] = set()
        for name, value in headers.get_all():
            lname = name.lower()
            if lname in skip:
                continue
            if lname == "set-cookie":
                cookie = _rewrite_cookie(value, prefix)
                if cookie:
                    self.add_header(name, cookie)
                continue
            if lname == "location":
                value = _rewrite_location(value, prefix)
            # The IDE's value replaces a default of Jupyter's; a repeated header is kept whole.
            (self.add_header if lname in seen else self.set_header)(name, value)
            seen.add(lname)

    # -- websockets --------------------------------------------------------------------------------
    async def _websocket(self, *args: str) -> None:
        # Refuse other sites before anything reaches the IDE.
        origin = self.request.headers.get("Origin")
        if origin is not None and not self.check_origin(origin):
            raise web.HTTPError(403, "Cross-origin websocket refused")
        hpc, path = self._split(args)
        ide = await self.manager.ide(hpc)
        for attempt in (1, 2):
            stale = ide.cookie
            try:
                response = await ide.upgrade(path, self._upstream_headers(upgrade=True))
            except (OSError, TunnelError) as exc:
                kind = IDETimeout if isinstance(exc, IDETimeout) else TunnelError
                raise kind(f"Cannot reach VS Code on {ide.hpc}: "
                           f"{getattr(exc, 'message', exc)}", {"hpc": ide.hpc}) from exc
            if response.code == 101:
                break
            with response:
                if attempt == 1 and (response.code == 403
                                     or _wants_login(response.code, response.headers)):
                    response.close()
                    await ide.relogin(stale)
                    continue
                await self._pass_on(response, ide)  # refused: the IDE's answer, as it is
            self.finish()
            return
        # Both sides agreed: answer the browser with the IDE's 101, then relay bytes.
        self._send_headers(response)
        self.finish()
        stream = self.detach()
        # Editor and terminal traffic is many small frames: no Nagle delay on either leg.
        stream.set_nodelay(True)
        conn = response.take_connection()
        ide.watch(conn)
        # What the browser sends, read for input where idle auto-cancel is on (VS Code's
        # keep-alives, acks and pings are not: a tab left open must not keep an idle job, see
        # wsinput.py). Elsewhere nothing is parsed on the way.
        used: Callable[[bytes], None] | None = None
        if self.manager.watches_idle(ide.hpc):
            meter = InputMeter(response.headers.get("Sec-WebSocket-Extensions"))
            manager, hpc_name = self.manager, ide.hpc

            def used(chunk: bytes) -> None:
                if meter.feed(chunk):
                    manager.log.debug("jupyter-hpc-manager: input to %s's IDE: %s", hpc_name,
                                      meter.last)
                    manager.note_input(hpc_name)

        relay = asyncio.ensure_future(_relay(stream, conn, lambda: touch(self.settings), used))
        _relays.add(relay)
        relay.add_done_callback(_relays.discard)

    # -- errors --------------------------------------------------------------------------------
    def status_for(self, exc: HPCError) -> int:
        # A gateway's words: 504 for an IDE that did not answer in time, else 502.
        code = exc.status_code
        if isinstance(exc, NotFoundError) or code < 500 or code == 504:
            return code
        return 502

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """A page for a person (this is a browser tab), with a way back to JupyterLab."""
        status_code, message, _ = self.error_info(status_code, kwargs)
        self.set_status(status_code)
        lab = url_path_join(self.base_url, "lab")
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(ERROR_PAGE.format(status=status_code, message=html.escape(message),
                                      lab=html.escape(lab, quote=True)))


def touch(settings: dict[str, Any]) -> None:
    """Note activity (at most once a second: this runs for every websocket message)."""
    now = time.monotonic()
    if now - settings.get("hpc_ide_activity_noted", 0.0) >= 1.0:
        settings["hpc_ide_activity_noted"] = now
        settings[ACTIVITY_KEY] = utcnow()


async def _relay(stream: IOStream, conn: ChannelConnection, activity: Callable[[], None],
                 sent: Callable[[bytes], None] | None = None) -> None:
    """Bytes both ways between the browser and the IDE until either side closes; each side
    waits for the other to take what it was given (back-pressure)."""

    async def browser_to_ide() -> None:
        try:
            while True:
                chunk = await stream.read_bytes(RELAY_READ, partial=True)
                await conn.send(chunk)
                activity()
                if sent is not None:
                    sent(chunk)
        except (StreamClosedError, OSError):
            pass
        finally:
            conn.close()

    async def ide_to_browser() -> None:
        try:
            while data := await conn.recv():
                await stream.write(data)
                activity()
        except (StreamClosedError, OSError):
            pass
        finally:
            stream.close()

    with contextlib.suppress(Exception):
        await asyncio.gather(browser_to_ide(), ide_to_browser())


class SlashHandler(HPCHandlerMixin):
    """hpc/code and hpc/<cluster>/code: the IDE's relative URLs need the trailing slash."""

    @web.authenticated
    @authorized("execute")
    def get(self, *args: str) -> None:
        query = f"?{self.request.query}" if self.request.query else ""
        self.redirect(self.request.path + "/" + query)


def _retrieve(future: Any) -> None:
    """A write the proxy did not wait for: its error (a closed browser) shows up elsewhere."""
    if not future.cancelled():
        future.exception()


def _wants_login(code: int, headers: httputil.HTTPHeaders) -> bool:
    """code-server answers an expired session with 401, or a redirect to its login page."""
    if code == 401:
        return True
    location = headers.get("Location", "")
    return code in (301, 302, 303, 307) and urllib.parse.urlsplit(location).path.rstrip(
        "/").endswith("login")


def _rewrite_location(location: str, prefix: str) -> str:
    """Relative redirects work under any prefix as they are; absolute ones are mapped into it."""
    parts = urllib.parse.urlsplit(location)
    if parts.scheme or parts.netloc:
        if not parts.netloc.endswith(TUNNEL_DOMAIN):
            return location  # somewhere else entirely
        location = urllib.parse.urlunsplit(("", "", parts.path, parts.query, parts.fragment))
    if location.startswith("/"):
        return prefix + location.lstrip("/")
    return location


def _rewrite_cookie(header: str, prefix: str) -> str | None:
    """Drop code-server's session cookie (the proxy holds it); scope others to the prefix."""
    try:
        jar: SimpleCookie = SimpleCookie(header)
    except CookieError:
        return None
    if not jar or SESSION_COOKIE in jar:
        return None
    for morsel in jar.values():
        path = morsel["path"] or "/"
        morsel["path"] = prefix + path.lstrip("/") if path.startswith("/") else prefix
    return "; ".join(m.OutputString() for m in jar.values())


ERROR_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>VS Code: {status}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;color:#222}}
a{{color:#0b62c4}}</style></head>
<body><h1>VS Code is not available here</h1>
<p>{message}</p>
<p>Start or reconnect a session from the HPC panel in <a href="{lab}">JupyterLab</a>.</p>
</body></html>
"""

handlers: list[tuple[str, Any, dict[str, Any]]] = [
    (r"hpc/code", SlashHandler, {}),
    (r"hpc/code/(.*)", IDEProxyHandler, {"active": True}),
    (r"hpc/([^/]+)/code", SlashHandler, {}),
    (r"hpc/([^/]+)/code/(.*)", IDEProxyHandler, {"active": False}),
]
