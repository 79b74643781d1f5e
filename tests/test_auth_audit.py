"""Auth audit: every route the extension registers, found in the running server's routing table,
refuses unauthenticated HTTP (all methods it implements) and websocket requests, and refuses
cookie-authenticated POSTs without the XSRF token."""

from __future__ import annotations

import re

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")


def all_rules(router):
    """Every rule of a tornado router, nested routers (per-host tables) included."""
    for rule in getattr(router, "rules", []):
        if hasattr(rule.target, "rules"):
            yield from all_rules(rule.target)
        else:
            yield rule


def extension_routes(app) -> list[tuple[str, type]]:
    """(concrete path, handler class) for every rule whose handler is ours."""
    routes = []
    for rule in [*all_rules(app.default_router), *all_rules(app.wildcard_router)]:
        handler = rule.target
        if not getattr(handler, "__module__", "").startswith("jupyter_hpc_manager"):
            continue
        pattern = rule.matcher.regex.pattern.rstrip("$")
        path = re.sub(r"\([^)]*\)", "gemini", pattern)  # each group: a cluster name
        routes.append((path.replace("\\", ""), handler))
    return routes


def implemented(handler: type) -> list[str]:
    """The methods our code implements (jupyter_server's own unauthenticated CORS preflight,
    APIHandler.options, answers nothing and is not ours)."""
    out = []
    for m in METHODS:
        owner = next((c for c in handler.__mro__ if m.lower() in vars(c)), None)
        if owner is not None and owner.__module__.startswith("jupyter_hpc_manager"):
            out.append(m)
    return out


@pytest.fixture
def routes(jp_serverapp):
    found = extension_routes(jp_serverapp.web_app)
    names = {h.__name__ for _, h in found}
    # The audit would pass vacuously if it found nothing: it must see all of them.
    assert {"HealthHandler", "ClusterStatusHandler", "StatusHandler", "LaunchHandler",
            "SwitchHandler", "StopHandler", "NotFoundHandler", "IDEProxyHandler",
            "SlashHandler"} <= names, names
    return found


async def test_every_route_refuses_unauthenticated_http(routes, http_server_client, manager):
    checked = 0
    for path, handler in routes:
        for method in implemented(handler):
            body = b"{}" if method in ("POST", "PUT", "PATCH") else None
            r = await http_server_client.fetch(path, method=method, body=body,
                                               raise_error=False, follow_redirects=False,
                                               allow_nonstandard_methods=True)
            if r.code == 302:
                assert "/login" in r.headers["Location"], (method, path)
            else:
                assert r.code == 403, (method, path, r.code)
            checked += 1
    assert checked >= 20
    assert sum(manager.commands.values()) == 0


async def test_every_route_refuses_unauthenticated_websockets(routes, jp_http_port,
                                                             http_server_client):
    for path, _ in routes:
        url = f"ws://127.0.0.1:{jp_http_port}{path}"
        with pytest.raises(HTTPClientError) as e:
            await websocket_connect(HTTPRequest(url, follow_redirects=False))
        assert e.value.code in (302, 403, 404, 405), (path, e.value.code)


async def test_cookie_posts_without_xsrf_are_refused(routes, http_server_client, jp_serverapp,
                                                     jp_base_url, manager):
    token = jp_serverapp.identity_provider.token
    login = await http_server_client.fetch(f"{jp_base_url}api/hpc/health?token={token}")
    cookie = "; ".join(c.split(";", 1)[0] for c in login.headers.get_list("Set-Cookie"))
    for path, handler in routes:
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            if method not in implemented(handler):
                continue
            r = await http_server_client.fetch(
                path, method=method, body=b"{}" if method != "DELETE" else None,
                headers={"Cookie": cookie}, raise_error=False, follow_redirects=False,
                allow_nonstandard_methods=True)
            assert r.code == 403, (method, path, r.code)
    assert sum(manager.commands.values()) == 0

