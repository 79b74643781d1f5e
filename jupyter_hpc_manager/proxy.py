"""The IDE at {base_url}hpc/code/ (the active cluster) and {base_url}hpc/<cluster>/code/: HTTP
(any method, bodies streamed both ways with back-pressure) and websockets on the same URL,
through the session's tunnel, behind Jupyter's login. The proxy logs in to code-server with the
job's password and sends code-server's session cookie upstream itself; the browser never sees
either, and Jupyter's token and cookies never reach the IDE."""

from __future__ import annotations

import asyncio
import html
import urllib.parse
from collections.abc import AsyncIterator
from http.cookies import CookieError, SimpleCookie
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import ensure_async, url_path_join
from tornado import httputil, web
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClientConnection, WebSocketHandler, websocket_connect

from .errors import HPCError, NotFoundError, TunnelError
from .ide import SESSION_COOKIE
from .sessions import Session, SessionManager
from .upstream import Response

AUTH_RESOURCE = "hpc"
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
# Jupyter's own credentials stay with Jupyter.
# (Expect: tornado has answered 100-continue to the browser already.)
DROPPED_REQUEST_HEADERS = frozenset({"authorization", "cookie", "host", "expect"})
JUPYTER_COOKIE_PREFIXES = ("username-", "jupyterhub-", "_xsrf")
WS_MAX_MESSAGE = 256 * 1024 * 1024
# How much of a download may be on its way to the browser before the proxy waits for it to be
# taken: large enough that waiting is rare, small enough that nothing is held whole.
FLUSH_BYTES = 512 * 1024
_END = object()


def _hop_by_hop(headers: httputil.HTTPHeaders) -> frozenset[str]:
    named = {t.strip().lower() for t in headers.get("Connection", "").split(",") if t.strip()}
    return HOP_BY_HOP | frozenset(named)


@web.stream_request_body
class IDEProxyHandler(WebSocketHandler, JupyterHandler):
    """One handler for HTTP and websocket requests to one cluster's IDE."""

    auth_resource = AUTH_RESOURCE

    @property
    def manager(self) -> SessionManager:
        manager: SessionManager = self.settings["hpc_manager"]
        return manager

    def initialize(self, active: bool = False) -> None:
        self.active = active
        self._body: asyncio.Queue[Any] | None = None
        self._upstream: asyncio.Task[Any] | None = None
        self._ws: WebSocketClientConnection | None = None
        self._route_prefix = ""  # this route's URL prefix, set by _split

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
        parts = ["hpc", "code/"] if hpc is None else ["hpc", urllib.parse.quote(hpc, safe=""),
                                                      "code/"]
        return url_path_join(self.base_url, *parts)

    def _upstream_headers(self, session: Session) -> httputil.HTTPHeaders:
        headers = httputil.HTTPHeaders()
        skip = _hop_by_hop(self.request.headers) | DROPPED_REQUEST_HEADERS
        for name, value in self.request.headers.get_all():
            if name.lower() not in skip and not name.lower().startswith("sec-websocket-"):
                headers.add(name, value)
        # code-server checks Origin against Host: keep the browser's Host so they agree.
        headers["Host"] = self.request.host
        cookies = []
        for name, morsel in self.request.cookies.items():
            if not name.startswith(JUPYTER_COOKIE_PREFIXES) and name != SESSION_COOKIE:
                cookies.append(f"{name}={morsel.value}")
        cookies.append(f"{SESSION_COOKIE}={session.ide_cookie}")
        headers["Cookie"] = "; ".join(cookies)
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

    def check_origin(self, origin: str = "") -> bool:
        return JupyterHandler.check_origin(self, origin)

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
        await self._body.put(_END)
        await self._upstream

    @web.authenticated
    @authorized("execute")
    async def get(self, *args: str, **kwargs: str) -> None:  # type: ignore[override]
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
            session = await self.manager.ide_session(hpc)
            for attempt in (1, 2):
                retry = await self._fetch(session, path, replayable=self._body is None
                                          and attempt == 1)
                if not retry:
                    break
                await self.manager.relogin(session)
        except HPCError as exc:
            if self._headers_written:
                self.log.warning("jupyter-hpc-manager: proxy to %s broke mid-response: %s",
                                 hpc or "the active cluster", exc.message)
                self.request.connection.close()  # type: ignore[union-attr]
                return
            raise
        if not self._finished:
            self.finish()

    async def _fetch(self, session: Session, path: str, replayable: bool) -> bool:
        """One upstream request; True if code-server wants a new login and it can be retried."""
        headers = self._upstream_headers(session)
        body: AsyncIterator[bytes] | None = None
        if self._body is not None:
            if "Content-Length" in self.request.headers or "Transfer-Encoding" in \
                    self.request.headers:
                body = self._body_pieces()
            else:
                await self._body.get()  # no body was sent: only the end marker comes
                body = b""  # type: ignore[assignment]
        try:
            response = await self.manager.ide_client.request(
                session.hpc, self.request.method or "GET", path, headers, body)
        except (OSError, TunnelError) as exc:
            raise TunnelError(f"Cannot reach VS Code on {session.hpc} (node {session.node}): "
                              f"{getattr(exc, 'message', exc)}", {"hpc": session.hpc}) from exc
        with response:
            if replayable and _wants_login(response.code, response.headers):
                response.close()
                return True
            self._send_headers(response, session)
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
                raise TunnelError(f"VS Code on {session.hpc}: {exc}") from exc
        return False

    def _send_headers(self, response: Response, session: Session) -> None:
        self.set_status(response.code, response.reason or None)
        self.clear_header("Content-Type")
        headers = response.headers
        skip = _hop_by_hop(headers)
        prefix = self._route_prefix
        for name, value in headers.get_all():
            lname = name.lower()
            if lname in skip:
                continue
            if lname == "set-cookie":
                cookie = _rewrite_cookie(value, prefix)
                if cookie:
                    self.add_header(name, cookie)
            elif lname == "location":
                self.set_header(name, _rewrite_location(value, prefix))
            else:
                self.set_header(name, value)

    # -- websockets --------------------------------------------------------------------------------
    async def _websocket(self, *args: str) -> None:
        # Refuse other sites before anything reaches the IDE (tornado checks again on upgrade).
        origin = self.request.headers.get("Origin")
        if origin is not None and not self.check_origin(origin):
            raise web.HTTPError(403, "Cross-origin websocket refused")
        hpc, path = self._split(args)
        session = await self.manager.ide_session(hpc)
        protocols = [p.strip() for p in
                     self.request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        for attempt in (1, 2):
            request = HTTPRequest(self.manager.ide_client.url(session.hpc, path, scheme="ws"),
                                  headers=self._upstream_headers(session), connect_timeout=15,
                                  request_timeout=0)
            try:
                self._ws = await websocket_connect(
                    request, on_message_callback=self._from_ide, subprotocols=protocols or None,
                    resolver=self.manager.ide_client.resolver, max_message_size=WS_MAX_MESSAGE)
                break
            except HTTPClientError as exc:
                if attempt == 1 and exc.code in (401, 403):
                    await self.manager.relogin(session)
                    continue
                raise TunnelError(f"VS Code on {session.hpc} refused the websocket: {exc}",
                                  {"hpc": session.hpc}) from exc
            except (OSError, TunnelError) as exc:
                raise TunnelError(f"Cannot reach VS Code on {session.hpc}: {exc}",
                                  {"hpc": session.hpc}) from exc
        await WebSocketHandler.get(self, *args)

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return self._ws.selected_subprotocol if self._ws else None

    def get_compression_options(self) -> dict[str, Any] | None:
        return None

    async def on_message(self, message: str | bytes) -> None:
        if self._ws is not None:
            try:
                await self._ws.write_message(message, binary=isinstance(message, bytes))
            except Exception:  # the IDE side closed; closing ours says so
                self.close()

    def _from_ide(self, message: str | bytes | None) -> None:
        if message is None:
            code = self._ws.close_code if self._ws else None
            self.close(code if code and code >= 1000 and code not in (1005, 1006) else 1001)
            return
        try:
            self.write_message(message, binary=isinstance(message, bytes))
        except Exception:
            if self._ws is not None:
                self._ws.close()

    def on_close(self) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None

    # -- errors --------------------------------------------------------------------------------
    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, HPCError):
            status_code = 502 if exc.status_code >= 500 else exc.status_code
            if isinstance(exc, NotFoundError):
                status_code = 404
            self.set_status(status_code)
            message = exc.message
        elif isinstance(exc, web.HTTPError):
            message = exc.log_message or exc.reason or self._reason or "Error"
        else:
            message = "Internal server error"
        lab = url_path_join(self.base_url, "lab")
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(ERROR_PAGE.format(status=status_code, message=html.escape(message),
                                      lab=html.escape(lab, quote=True)))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, HPCError):
            self.log.info("jupyter-hpc-manager: %s %s -> %s", self.request.method,
                          self.request.path, value.message)
        else:
            super().log_exception(typ, value, tb)


class SlashHandler(JupyterHandler):
    """hpc/code and hpc/<cluster>/code: the IDE's relative URLs need the trailing slash."""

    auth_resource = AUTH_RESOURCE

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
        if not parts.netloc.endswith(".hpc-tunnel"):
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
