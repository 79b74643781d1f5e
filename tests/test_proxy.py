"""The IDE proxy at {base_url}hpc/code/ and {base_url}hpc/<cluster>/code/, against real sessions:
echo_ide.py (an HTTP server speaking code-server's login) for HTTP semantics, real code-server
for the workbench and websockets. pytest-jupyter's base_url is /a%40b/, not /."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import tracemalloc
import urllib.parse

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

import jupyter_process
from jupyter_process import home_file, slurm_jobs

WORKBENCH_JS = pathlib.Path(
    "/opt/jupyter-hpc-sandbox/code-server/lib/node_modules/code-server/lib/vscode/out/vs/code/"
    "browser/workbench/workbench.js")


@pytest.fixture
def launched(api, clean_slurm):
    """Launch sessions on the named clusters; returns their replies."""

    async def launch(*clusters: str) -> dict:
        replies = {}
        for hpc in clusters:
            code, reply = await api("POST", "launch", body={"hpc": hpc, "mem": "1G"})
            assert (code, reply["status"]) == (200, "running"), reply
            replies[hpc] = reply
        return replies

    return launch


@pytest.fixture
def ide(jp_fetch):
    """Fetch through the proxy (with Jupyter's token); never raises on HTTP errors."""

    async def fetch(*path: str, **kw):
        kw.setdefault("raise_error", False)
        kw.setdefault("follow_redirects", False)
        return await jp_fetch("hpc", *path, **kw)

    return fetch


async def test_launch_status_and_cluster_status_carry_the_ide_url(api, launched, jp_base_url):
    replies = await launched("echo1")
    assert replies["echo1"]["url"] == f"{jp_base_url}hpc/echo1/code/"
    code, status = await api("GET", "cluster-status")
    assert status["echo1"]["url"] == f"{jp_base_url}hpc/echo1/code/"
    assert "url" not in status["echo2"]
    code, s = await api("GET", "status")
    assert s["sessions"]["echo1"]["url"] == f"{jp_base_url}hpc/echo1/code/"


async def test_every_method_and_body_reaches_the_ide(ide, launched, jp_serverapp):
    await launched("echo1")
    token = jp_serverapp.identity_provider.token
    body = os.urandom(300_000)
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        r = await ide("echo1", "code", "echo", method=method, body=body,
                      params={"a": "1", "token": token}, allow_nonstandard_methods=True)
        assert r.code == 200
        info = json.loads(r.body)
        assert info["method"] == method
        assert info["bodyLength"] == len(body)
        assert info["bodySha256"] == hashlib.sha256(body).hexdigest()
        assert info["query"] == "a=1"  # Jupyter's token is not passed on
    for method in ("GET", "OPTIONS"):
        r = await ide("echo1", "code", "echo", method=method)
        assert (r.code, json.loads(r.body)["method"]) == (200, method)
    r = await ide("echo1", "code", "echo", method="HEAD")
    assert r.code == 200 and r.body == b""


async def test_a_large_upload_streams_through_a_full_ssh_window(ide, launched):
    """20 MB is ten times the SSH window sshd grants: the upload must wait for the window to
    reopen, again and again, and arrive whole."""
    await launched("echo1")
    body = os.urandom(20 * 1024 * 1024)
    r = await ide("echo1", "code", "echo", method="PUT", body=body, request_timeout=120)
    info = json.loads(r.body)
    assert (info["bodyLength"], info["bodySha256"]) == (len(body),
                                                        hashlib.sha256(body).hexdigest())


async def test_jupyter_credentials_stay_with_jupyter_and_hop_by_hop_headers_are_dropped(
        ide, launched):
    await launched("echo1")
    r = await ide("echo1", "code", "echo", headers={
        "Cookie": "username-x=jupyter-login; _xsrf=abc; theme=dark",
        "Connection": "keep-alive, X-Private-Hop", "X-Private-Hop": "1", "Keep-Alive": "5",
        "X-Custom": "kept", "Proxy-Authorization": "secret"})
    headers = {k.lower(): v for k, v in json.loads(r.body)["headers"].items()}
    assert "authorization" not in headers  # Jupyter's token header
    assert "proxy-authorization" not in headers and "keep-alive" not in headers
    assert "x-private-hop" not in headers  # named in Connection: hop-by-hop
    assert headers["x-custom"] == "kept"
    cookies = headers["cookie"]
    assert "theme=dark" in cookies and "code-server-session=" in cookies
    assert "username-" not in cookies and "_xsrf" not in cookies


async def test_redirects_and_cookies_are_mapped_under_the_base_url(ide, launched, jp_base_url):
    await launched("echo1")
    prefix = f"{jp_base_url}hpc/echo1/code/"
    r = await ide("echo1", "code", "redirect-abs")
    assert (r.code, r.headers["Location"]) == (302, prefix + "echo?from=abs")
    r = await ide("echo1", "code", "redirect-rel")
    assert r.headers["Location"] == "./echo?from=rel"  # relative: right under any prefix
    r = await ide("echo1", "code", "redirect-ext")
    assert r.headers["Location"] == "https://example.org/elsewhere"
    r = await ide("echo1", "code", "set-cookie")
    cookies = r.headers.get_list("Set-Cookie")
    assert any(c.startswith("theme=dark") and f"Path={prefix}" in c for c in cookies), cookies
    assert not any("code-server-session" in c for c in cookies)  # the proxy keeps that one


async def test_an_expired_ide_session_is_renewed_without_the_user(ide, launched, manager):
    await launched("echo1")
    first = manager.session("echo1").ide.cookie
    assert (await ide("echo1", "code", "expire")).code == 200
    r = await ide("echo1", "code", "echo")
    assert r.code == 200  # logged in again and retried
    assert manager.session("echo1").ide.cookie != first


async def test_switch_changes_what_hpc_code_serves(api, ide, launched):
    replies = await launched("echo1", "echo2")
    r = await ide("code", "whoami")
    assert json.loads(r.body)["jobId"] == replies["echo2"]["jobId"]  # the last launch is active
    code, _ = await api("POST", "switch", "echo1")
    assert code == 200
    r = await ide("code", "whoami")
    assert json.loads(r.body)["jobId"] == replies["echo1"]["jobId"]
    r = await ide("echo2", "code", "whoami")  # the per-cluster URL does not move
    assert json.loads(r.body)["jobId"] == replies["echo2"]["jobId"]


async def test_stop_closes_the_tunnel_and_the_url_answers_a_clear_page(
        api, ide, launched, manager, jp_base_url):
    await launched("echo1")
    tunnel = manager.session("echo1").ide.tunnel
    assert (await ide("echo1", "code", "small")).code == 200
    assert tunnel.connections >= 1  # a kept-alive connection
    code, _ = await api("POST", "stop", "echo1", body={})
    assert code == 200
    assert tunnel.connections == 0  # every connection to the IDE ended with the stop
    for path in (("echo1", "code", "small"), ("code", "small")):
        r = await ide(*path)
        assert r.code == 404
        page = r.body.decode()
        assert r.headers["Content-Type"].startswith("text/html")
        assert "No VS Code session" in page
        assert f'href="{jp_base_url}lab"' in page
    r = await ide("nosuchcluster", "code", "x")
    assert r.code == 404 and "no cluster named" in r.body.decode()
    assert len(slurm_jobs()) == 1  # stop without cancelJob keeps the job


def listening_sockets(pid: int) -> set[str]:
    """The TCP ports and UNIX socket paths a process listens on (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in pathlib.Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # LISTEN
                found.add(f"{table}:{int(f[1].rsplit(':', 1)[1], 16)}")
    for line in pathlib.Path("/proc/net/unix").read_text().splitlines()[1:]:
        f = line.split()
        if f[6] in inodes and int(f[3], 16) & 0x10000:  # __SO_ACCEPTCON: listening
            found.add(f"unix:{f[7] if len(f) > 7 else '(unnamed)'}")
    return found


async def test_the_tunnel_opens_no_port_or_socket_on_the_jupyter_host(
        launched, manager, ide, jp_base_url, jp_http_port, jp_auth_header):
    before = listening_sockets(os.getpid())
    await launched("echo1")
    assert (await ide("echo1", "code", "small")).code == 200
    ws = await websocket_connect(HTTPRequest(
        f"ws://127.0.0.1:{jp_http_port}{jp_base_url}hpc/echo1/code/ws",
        headers=dict(jp_auth_header)), subprotocols=["echo-protocol"])
    await ws.write_message("ping")
    assert await ws.read_message() == "ping"
    # HTTP and the websocket rode SSH channels: nothing new listens anywhere.
    assert manager.session("echo1").ide.tunnel.connections >= 2
    assert listening_sockets(os.getpid()) == before
    ws.close()


async def test_the_slash_is_added(ide, jp_base_url):
    r = await ide("code")
    assert (r.code, r.headers["Location"]) == (302, f"{jp_base_url}hpc/code/")
    r = await ide("gemini", "code", params={"folder": "/tmp"})
    assert r.headers["Location"] == f"{jp_base_url}hpc/gemini/code/?folder=%2Ftmp"


# -- real code-server ------------------------------------------------------------------------

async def test_the_workbench_comes_from_code_server_streamed_not_buffered(ide, launched):
    await launched("gemini")
    r = await ide("code/")
    assert r.code == 302 and "folder=" in r.headers["Location"]  # code-server's own redirect
    r = await ide("code/", params={"folder": "/home/hpcuser"})
    assert r.code == 200
    page = r.body.decode()
    assert "workbench.js" in page
    script = page.split('src="')[-1].split('"')[0]
    assert script.endswith("workbench.js")
    received = 0

    def count(chunk: bytes) -> None:
        nonlocal received
        received += len(chunk)

    tracemalloc.start()
    try:
        r = await ide("code", *script.split("/"), streaming_callback=count,
                      request_timeout=120)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.code == 200
    assert received == WORKBENCH_JS.stat().st_size > 15_000_000
    # Streamed in pieces: the server never held the 19 MB script (nor did this client).
    assert peak < 6_000_000, peak


async def test_a_web_app_on_the_node_is_reached_through_vs_codes_port_proxy(
        ide, launched, jp_base_url):
    """The job tells code-server where its port proxy is reached from the browser
    (VSCODE_PROXY_URI, for the Ports view); a small HTTP server the user starts on the node
    answers there, through this server's proxy and code-server's /proxy/<port>/."""
    await launched("gemini")
    port = jupyter_process.free_port()
    home_file("hpcuser", f"webapp-{port}/hello.txt", "hello from the node\n")
    app = subprocess.Popen(
        ["runuser", "-u", "hpcuser", "--", "python3", "-m", "http.server", str(port),
         "--bind", "127.0.0.1", "--directory", f"/home/hpcuser/webapp-{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            r = await ide("gemini", "code", "proxy", str(port), "hello.txt")
            if r.code == 200:
                break
            await asyncio.sleep(0.2)
        assert (r.code, r.body) == (200, b"hello from the node\n")
        # What code-server was given (its process environment, read as root).
        pids = subprocess.run(["pgrep", "-u", "hpcuser", "-f", "code-server.*--bind-addr"],
                              capture_output=True, text=True).stdout.split()
        environs = [pathlib.Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                    for pid in pids]
        wanted = f"VSCODE_PROXY_URI={jp_base_url}hpc/gemini/code/proxy/{{{{port}}}}/".encode()
        assert any(wanted in env for env in environs), environs
    finally:
        app.terminate()
        app.wait(10)
        shutil.rmtree(f"/home/hpcuser/webapp-{port}", ignore_errors=True)


async def test_requests_share_kept_alive_connections_and_bodies_arrive_intact(
        ide, launched, manager):
    """The proxy reuses its connections to code-server (no channel per request), sequentially
    and 8 at a time, and every byte of code-server's files arrives as it is on disk."""
    await launched("gemini")
    r = await ide("code/", params={"folder": "/home/hpcuser"})
    script = r.body.decode().split('src="')[-1].split('"')[0]
    out = script[: script.index("/vs/code/")]  # .../static/out
    disk = WORKBENCH_JS.parents[4]  # lib/vscode/out
    names = ["vs/code/browser/workbench/workbench.css", "nls.messages.json",
             "nls.metadata.json", "nls.keys.json"]
    tunnel = manager.session("gemini").ide.tunnel
    opened = tunnel.opened
    for _ in range(5):
        for name in names:
            r = await ide("code", *f"{out}/{name}".split("/"))
            assert r.code == 200, name
            assert r.body == (disk / name).read_bytes(), name
    assert tunnel.opened - opened <= 2, tunnel.opened - opened  # 20 requests, 1 channel
    opened = tunnel.opened
    replies = await asyncio.gather(*(ide("code", *f"{out}/{name}".split("/"))
                                     for name in names * 4))
    assert [r.body for r in replies] == [(disk / n).read_bytes() for n in names * 4]
    assert tunnel.opened - opened <= 16  # at most one new channel per concurrent request


async def test_code_servers_websocket_goes_through_the_proxy_and_tunnel(
        launched, manager, jp_http_port, jp_base_url, jp_auth_header):
    await launched("gemini")
    url = (f"ws://127.0.0.1:{jp_http_port}{jp_base_url}hpc/code/"
           "?reconnectionToken=0b4d2d2c-7f0e-4d61-9d7a-3e0c3c1f2a11&reconnection=false"
           "&skipWebSocketFrames=false")
    ws = await websocket_connect(HTTPRequest(url, headers=dict(jp_auth_header)))
    assert manager.session("gemini").ide.tunnel.connections >= 1  # it went through the tunnel
    ws.close()
    # A cluster with no session: refused before any upgrade (subprotocols: see test_load.py).
    with pytest.raises(HTTPClientError) as e:
        await websocket_connect(HTTPRequest(url.replace("/hpc/code/", "/hpc/nosuch/code/"),
                                            headers=dict(jp_auth_header)))
    assert e.value.code == 404


async def test_without_jupyter_auth_http_and_websocket_are_refused(
        launched, http_server_client, jp_http_port, jp_base_url):
    await launched("gemini")
    for path in ("hpc/code/", "hpc/gemini/code/", "hpc/code"):
        r = await http_server_client.fetch(f"{jp_base_url}{path}", raise_error=False,
                                           follow_redirects=False)
        assert r.code in (302, 403), (path, r.code)
        if r.code == 302:
            assert "/login" in r.headers["Location"]
    r = await http_server_client.fetch(f"{jp_base_url}hpc/gemini/code/echo", method="POST",
                                       body="x", raise_error=False)
    assert r.code == 403
    url = f"ws://127.0.0.1:{jp_http_port}{jp_base_url}hpc/code/?reconnectionToken=x"
    with pytest.raises(HTTPClientError) as e:
        await websocket_connect(url)
    assert e.value.code in (302, 403)


async def test_cross_origin_websocket_and_post_are_refused(
        launched, jp_http_port, jp_base_url, http_server_client, jp_serverapp):
    await launched("echo1")
    token = jp_serverapp.identity_provider.token
    login = await http_server_client.fetch(f"{jp_base_url}api/hpc/health?token={token}")
    cookie = "; ".join(c.split(";", 1)[0] for c in login.headers.get_list("Set-Cookie"))
    # Same-origin POST from the IDE's page (cookie, Origin = this host): allowed.
    host = f"127.0.0.1:{jp_http_port}"
    r = await http_server_client.fetch(
        f"{jp_base_url}hpc/echo1/code/echo", method="POST", body="x", raise_error=False,
        headers={"Cookie": cookie, "Origin": f"http://{host}"})
    assert r.code == 200
    # The same from another site: refused.
    r = await http_server_client.fetch(
        f"{jp_base_url}hpc/echo1/code/echo", method="POST", body="x", raise_error=False,
        headers={"Cookie": cookie, "Origin": "http://evil.example"})
    assert r.code in (403, 404)
    url = f"ws://{host}{jp_base_url}hpc/echo1/code/"
    with pytest.raises(HTTPClientError) as e:
        await websocket_connect(HTTPRequest(url, headers={"Cookie": cookie,
                                                          "Origin": "http://evil.example"}))
    assert e.value.code == 403


async def test_the_ide_port_on_the_node_is_useless_without_the_password(launched, manager):
    from tornado.httpclient import AsyncHTTPClient

    await launched("gemini")
    conn = manager.session("gemini").connection
    base = f"http://127.0.0.1:{conn.port}"
    client = AsyncHTTPClient()
    r = await client.fetch(base + "/", follow_redirects=False, raise_error=False)
    assert r.code == 302 and "login" in r.headers["Location"]
    r = await client.fetch(base + "/login", raise_error=False)
    assert r.code == 200 and b"password" in r.body.lower()  # the login page, not the workbench
    r = await client.fetch(base + "/stable-x/static/out/vs/code/browser/workbench/workbench.js",
                           raise_error=False)
    assert r.code in (401, 403, 404) and b"workbench" not in r.body[:2000]


async def test_the_password_is_in_no_reply_and_no_log(api, ide, launched, manager, caplog):
    await launched("gemini", "echo1")
    secrets = [manager.session(h).connection.password for h in ("gemini", "echo1")]
    replies = []
    for path in ("status", "cluster-status", "health"):
        replies.append(json.dumps(await api("GET", path)))
    replies.append(json.dumps(await api("POST", "launch", body={"hpc": "gemini"})))
    r = await ide("code/", params={"folder": "/home/hpcuser"})
    replies.append(r.body.decode(errors="replace") + str(r.headers))
    r = await ide("echo1", "code", "echo")
    replies.append(r.body.decode() + str(r.headers))
    logs = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    assert "jupyter-hpc-manager" in logs  # the logs were captured
    for secret in secrets:
        assert len(secret) >= 32
        for text in (*replies, logs):
            assert secret not in text
        assert urllib.parse.quote(secret) not in logs
