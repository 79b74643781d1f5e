"""What a JupyterHub deployment needs from the IDE proxy, on a single-user-like server (Jupyter's
pages under the Hub's CSP, frame-ancestors 'none'): the IDE's answers may be framed by its own
origin (VS Code's webviews are such iframes) while Jupyter's pages keep the Hub's rule; traffic
to the IDE counts as the server's activity for the Hub's idle culler, the panel's polling does
not."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

HUB_CSP = "frame-ancestors 'none'"


@pytest.fixture
def jp_server_config(jp_server_config):
    jp_server_config["ServerApp"]["tornado_settings"] = {
        "headers": {"Content-Security-Policy": HUB_CSP}}
    return jp_server_config


@pytest.fixture
def launch_echo(api, clean_slurm):
    async def launch() -> dict:
        code, reply = await api("POST", "launch", body={"hpc": "echo1", "mem": "1G"})
        assert (code, reply["status"]) == (200, "running"), reply
        return reply

    return launch


async def test_ide_answers_may_be_framed_by_their_origin_jupyters_pages_keep_the_hubs_rule(
        jp_fetch, launch_echo):
    await launch_echo()
    r = await jp_fetch("hpc", "echo1", "code", "small", raise_error=False)
    assert (r.code, r.headers["Content-Security-Policy"]) == (200, "frame-ancestors 'self'")
    r = await jp_fetch("hpc", "code", "small", raise_error=False)  # the active cluster's URL
    assert r.headers["Content-Security-Policy"] == "frame-ancestors 'self'"
    # An IDE answer with a policy of its own keeps exactly that one.
    r = await jp_fetch("hpc", "echo1", "code", "csp", raise_error=False)
    assert r.headers.get_list("Content-Security-Policy") == ["default-src 'self'"]
    # Jupyter's own answers are as the Hub set them.
    r = await jp_fetch("api", "hpc", "health")
    assert r.headers["Content-Security-Policy"].startswith(HUB_CSP)
    r = await jp_fetch("api", "status")
    assert r.headers["Content-Security-Policy"].startswith(HUB_CSP)


async def last_activity(jp_fetch) -> dt.datetime:
    """What JupyterHub's activity reporting reads: the server's last_activity."""
    import json

    r = await jp_fetch("api", "status")
    return dt.datetime.fromisoformat(json.loads(r.body)["last_activity"].replace("Z", "+00:00"))


async def test_ide_traffic_is_activity_and_the_panels_polling_is_not(
        api, jp_fetch, jp_http_port, jp_base_url, jp_auth_header, launch_echo):
    await launch_echo()
    before = await last_activity(jp_fetch)
    await asyncio.sleep(1.5)
    # An open panel polls: that is not the user doing anything.
    for path in ("cluster-status", "status", "health"):
        assert (await api("GET", path))[0] == 200
    assert await last_activity(jp_fetch) == before
    # Typing in VS Code: websocket messages only (the page was loaded long ago).
    ws = await websocket_connect(HTTPRequest(
        f"ws://127.0.0.1:{jp_http_port}{jp_base_url}hpc/echo1/code/ws",
        headers=dict(jp_auth_header)), subprotocols=["echo-protocol"])
    await asyncio.sleep(1.5)
    typed_at = dt.datetime.now(dt.timezone.utc)
    for key in "hello":
        await ws.write_message(key)
        assert await ws.read_message() == key
    ws.close()
    seen = await last_activity(jp_fetch)
    assert seen >= typed_at - dt.timedelta(seconds=1.1) and seen > before
    # And a page or file fetched through the proxy.
    await asyncio.sleep(1.5)
    fetched_at = dt.datetime.now(dt.timezone.utc)
    assert (await jp_fetch("hpc", "echo1", "code", "small")).code == 200
    assert await last_activity(jp_fetch) >= fetched_at - dt.timedelta(seconds=0.1)
