"""The sandbox JupyterHub end to end, as its users meet it: alice logs in with the Hub's form,
launches from the HPC panel, and works in VS Code under /user/alice/ (Explorer, a terminal
whose websocket goes through configurable-http-proxy, a Markdown preview in a webview); bob, in
another browser, is refused alice's IDE, REST API and websocket, and his own launch runs as bob.
Two users launching at once get a job each; a Hub-driven restart of alice's server finds her
job; and using only VS Code keeps alice's server active in the Hub's eyes."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import os
import pwd
import shutil
import subprocess
import time
import urllib.request
import uuid

import pytest

import mfa
from hubtools import HUB, hub_api, jobs_of, log_in
from jupyter_process import home_file
from vscode_ui import markdown_preview

WORKBENCH_TIMEOUT = 120_000  # ms


def stop_server(user: str) -> None:
    """Stop a user's single-user server through the Hub, and wait until it is gone."""
    code, _ = hub_api("DELETE", f"users/{user}/server")
    assert code in (202, 204, 400), code  # (400: it was not running)
    deadline = time.monotonic() + 60
    while (hub_api("GET", f"users/{user}")[1] or {}).get("servers") and \
            time.monotonic() < deadline:
        time.sleep(0.5)


def reset_workspaces(user: str) -> None:
    """JupyterLab's saved layouts of the user (with the server stopped): a notebook left open
    on a job's kernel by an earlier test would come back with a "Select Kernel" dialog (its
    job has ended) over everything the next test clicks."""
    folder = os.path.join(pwd.getpwnam(user).pw_dir, ".jupyter", "lab", "workspaces")
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))


@pytest.fixture
def clean_jobs():
    """Both users start with no job, no running server and JupyterLab's default layout."""
    for user in ("alice", "bob"):
        subprocess.run(["scancel", "-u", user], check=False)
        stop_server(user)
        reset_workspaces(user)
    yield
    for user in ("alice", "bob"):
        subprocess.run(["scancel", "-u", user], check=False)
        stop_server(user)


def xsrf(context) -> str:
    return next(c["value"] for c in context.cookies() if c["name"] == "_xsrf")


def api(context, user: str, method: str, path: str, body: dict | None = None):
    """The extension's REST API as the logged-in browser calls it (cookie + XSRF token)."""
    response = context.request.fetch(
        f"{HUB}/user/{user}/api/hpc/{path}", method=method,
        headers={"X-XSRFToken": xsrf(context), "Content-Type": "application/json"},
        data=json.dumps(body) if body is not None else None, timeout=180_000)
    text = response.text()
    return response.status, (json.loads(text) if text.startswith("{") else text)


def vscode_settings(user: str, job_name: str) -> None:
    """The IDE's settings for the job: the terminal drawn in the DOM (so the test can read it)
    and no welcome page."""
    home_file(user, f".jupyter-hpc-manager/{job_name}/data/User/settings.json", json.dumps({
        "terminal.integrated.gpuAcceleration": "off",
        "workbench.startupEditor": "none",
        "security.workspace.trust.enabled": False,
    }))


def test_alice_works_in_vscode_from_the_panel_and_bob_cannot_reach_it(
        hub, browser, artifacts, clean_jobs):
    # In a folder named to come first in the Explorer (folders come before files, and a home
    # that has run kernels has .ipython, .jupyter, .local, ... ahead of any file).
    folder = f"0-alice-{uuid.uuid4().hex[:6]}"
    marker = f"alices-notes-{uuid.uuid4().hex[:6]}.md"
    home_file("alice", f"{folder}/{marker}", f"# Hello from alice {marker}\n\nSome *notes*.\n")
    vscode_settings("alice", "hub-code-gemini")
    context, lab = log_in(browser, "alice", hub["alice"])
    bob_context = None
    try:
        # The panel: launch with the defaults, then open VS Code in a new tab.
        tab = lab.get_by_role("tab", name="HPC")
        tab.wait_for(timeout=60_000)
        lab.wait_for_timeout(500)  # the layout restorer may open the panel itself
        if tab.get_attribute("aria-selected") != "true":
            tab.click()
        card = lab.locator(".jp-HPCPanel-card[data-hpc=gemini]")
        card.locator(".jp-HPCPanel-launch").click()
        with context.expect_page(timeout=180_000) as opened:
            card.locator(".jp-HPCPanel-open").click(timeout=180_000)
        ide = opened.value
        ide.wait_for_load_state()
        assert ide.url.startswith(f"{HUB}/user/alice/hpc/")
        ide.get_by_text(folder).first.wait_for(timeout=WORKBENCH_TIMEOUT)
        assert [(j["user"], j["name"]) for j in jobs_of("alice")] == [("alice",
                                                                       "hub-code-gemini")]

        # A Markdown preview: a webview, an iframe the Hub's frame-ancestors 'none' would block.
        ide.get_by_text(folder).first.click()  # (the folder opens: the notes show)
        preview = markdown_preview(ide, marker)
        try:
            preview.get_by_role("heading", name=f"Hello from alice {marker}").wait_for(
                timeout=60_000)
        finally:
            ide.screenshot(path=artifacts / "hub-alice-vscode.png")

        # A terminal in the workbench: its websocket goes through CHP and our proxy.
        ide.keyboard.press("Control+Backquote")
        terminal = ide.locator(".xterm-rows")
        terminal.first.wait_for(timeout=60_000)
        ide.keyboard.type("echo user=$(id -un)\n")
        terminal.filter(has_text="user=alice").first.wait_for(timeout=60_000)
        ide_url = ide.url.split("?")[0]

        # bob, in a browser of his own: refused everything of alice's.
        bob_context, bob_lab = log_in(browser, "bob", hub["bob"])
        for url in (ide_url, f"{HUB}/user/alice/hpc/code/",
                    f"{HUB}/user/alice/api/hpc/status"):
            response = bob_context.request.get(url, max_redirects=0)
            assert response.status == 403 or (
                response.status == 302 and "/user/alice" not in response.headers["location"]
            ), (url, response.status)
        refused = bob_lab.evaluate(
            """url => new Promise(resolve => {
                 const ws = new WebSocket(url);
                 ws.onopen = () => { ws.close(); resolve('open'); };
                 ws.onerror = () => resolve('refused');
               })""",
            ide_url.replace("http://", "ws://"))
        assert refused == "refused"
        code, reply = api(bob_context, "bob", "POST", "launch", {"hpc": "apollo", "mem": "1G"})
        assert (code, reply["status"]) == (200, "running"), reply
        assert [(j["user"], j["name"]) for j in jobs_of("bob")] == [("bob", "hub-code-apollo")]
        assert [j["user"] for j in jobs_of("alice")] == ["alice"]  # alice's job is untouched
    finally:
        context.close()
        if bob_context is not None:
            bob_context.close()
        shutil.rmtree(os.path.join(pwd.getpwnam("alice").pw_dir, folder), ignore_errors=True)


def test_two_users_launching_at_the_same_moment_get_a_job_each(hub, browser, clean_jobs):
    contexts = {u: log_in(browser, u, hub[u])[0] for u in ("alice", "bob")}
    try:
        # Each user's browser session (its cookies and XSRF token), used from two threads at
        # once: Playwright's own objects belong to this thread.
        sessions = {u: ("; ".join(f"{c['name']}={c['value']}" for c in ctx.cookies()),
                        xsrf(ctx)) for u, ctx in contexts.items()}

        def launch(user: str) -> tuple[int, dict]:
            cookie, token = sessions[user]
            request = urllib.request.Request(
                f"{HUB}/user/{user}/api/hpc/launch", method="POST",
                data=json.dumps({"hpc": "gemini", "mem": "1G"}).encode(),
                headers={"Cookie": cookie, "X-XSRFToken": token})
            with urllib.request.urlopen(request, timeout=180) as r:
                return r.status, json.loads(r.read())

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            replies = dict(zip(sessions, pool.map(launch, sessions), strict=True))
        for user, (code, reply) in replies.items():
            assert (code, reply["status"]) == (200, "running"), (user, reply)
            assert [j["id"] for j in jobs_of(user)] == [reply["jobId"]]
        assert replies["alice"][1]["jobId"] != replies["bob"][1]["jobId"]
    finally:
        for c in contexts.values():
            c.close()


def test_a_hub_restart_of_alices_server_finds_her_job(hub, browser, clean_jobs):
    context, lab = log_in(browser, "alice", hub["alice"])
    try:
        code, reply = api(context, "alice", "POST", "launch", {"hpc": "gemini", "mem": "1G"})
        assert (code, reply["status"]) == (200, "running"), reply
        lab.close()  # (a JupyterLab left open on a server that goes away blocks the context)
        stop_server("alice")
        assert [j["id"] for j in jobs_of("alice")] == [reply["jobId"]]  # the job outlives it
        assert hub_api("POST", "users/alice/server")[0] in (201, 202)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            server = (hub_api("GET", "users/alice")[1]["servers"] or {}).get("", {})
            if server.get("ready"):
                break
            time.sleep(0.5)
        # alice reloads her tab: the new server logs her in through the Hub again.
        page = context.new_page()
        page.goto(f"{HUB}/user/alice/lab")
        page.wait_for_url(f"{HUB}/user/alice/lab**", timeout=120_000)
        code, status = api(context, "alice", "GET", "cluster-status?refresh=true")
        assert code == 200, (code, status)
        assert (status["gemini"]["status"], status["gemini"]["jobId"]) == ("running",
                                                                           reply["jobId"])
        assert status["gemini"]["url"] == "/user/alice/hpc/gemini/code/"
    finally:
        context.close()


def test_using_only_vscode_keeps_alices_server_active_for_the_hub(hub, browser, clean_jobs):
    context, lab = log_in(browser, "alice", hub["alice"])
    try:
        code, reply = api(context, "alice", "POST", "launch", {"hpc": "gemini", "mem": "1G"})
        assert code == 200, reply
        lab.close()  # no JupyterLab tab any more: only VS Code from here on
        ide = context.new_page()
        ide.goto(f"{HUB}/user/alice/hpc/gemini/code/")
        ide.locator(".monaco-workbench").wait_for(timeout=WORKBENCH_TIMEOUT)
        ide.keyboard.press("Control+Backquote")
        started = dt.datetime.now(dt.timezone.utc)
        # Type for a while; the single-user server reports its activity to the Hub.
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            ide.keyboard.type("echo working\n")
            time.sleep(2)
        user = hub_api("GET", "users/alice")[1]
        last = dt.datetime.fromisoformat(user["servers"][""]["last_activity"].replace("Z",
                                                                                     "+00:00"))
        assert last > started, (last, started)
    finally:
        context.close()


def test_under_the_hub_alices_idle_job_is_cancelled_and_bobs_is_not(hub, browser, clean_jobs):
    """Idle auto-cancel in Hub-spawned servers: alice's server cancels jobs idle for 6 s (set in
    her own ~/.jupyter, read after the Hub's config: an admin would set it in the Hub's; this
    way the Hub need not restart), bob's server never does. Each server's watch is its own:
    alice's job is cancelled and says why, bob's runs on."""
    alice_home = pwd.getpwnam("alice").pw_dir
    config = ".jupyter/jupyter_server_config.py"
    home_file("alice", config, "c.HPCManager.idle_cancel_minutes = 0.1\n")
    contexts = {}
    try:
        contexts = {u: log_in(browser, u, hub[u])[0] for u in ("alice", "bob")}
        jobs = {}
        for user, ctx in contexts.items():
            code, reply = api(ctx, user, "POST", "launch", {"hpc": "gemini", "mem": "1G"})
            assert (code, reply["status"]) == (200, "running"), (user, reply)
            jobs[user] = reply["jobId"]
        deadline = time.monotonic() + 90
        while jobs_of("alice") and time.monotonic() < deadline:
            time.sleep(1)
        assert jobs_of("alice") == [], "alice's idle job was not cancelled"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            code, status = api(contexts["alice"], "alice", "GET", "status")
            entry = status["sessions"]["gemini"]
            if entry["status"] == "idle":
                break
            time.sleep(1)
        assert entry["lastEnd"]["jobId"] == jobs["alice"], entry
        assert entry["lastEnd"]["reason"] == "idle", entry
        # bob's job, idle all along, runs on: his server cancels nothing.
        assert [j["id"] for j in jobs_of("bob")] == [jobs["bob"]]
        code, status = api(contexts["bob"], "bob", "GET", "status")
        assert status["sessions"]["gemini"]["status"] == "running"
        assert "idleSeconds" not in status["sessions"]["gemini"]
    finally:
        for c in contexts.values():
            c.close()
        os.unlink(os.path.join(alice_home, config))


def test_a_login_to_an_mfa_cluster_belongs_to_one_users_server(hub, browser, clean_jobs):
    """One config for everybody names the MFA cluster; alice answers its prompts through the Hub
    (cookie + XSRF, through configurable-http-proxy) and is connected; bob's server, from the
    same config, still needs a login of its own."""
    contexts = {u: log_in(browser, u, hub[u])[0] for u in ("alice", "bob")}
    try:
        for user, ctx in contexts.items():
            code, status = api(ctx, user, "GET", "cluster-status")
            assert status["mfa"]["login"] == "required", (user, status["mfa"])
        alice = contexts["alice"]
        the_code = mfa.fresh_code()
        code, reply = api(alice, "alice", "POST", "login/mfa", {})
        while reply["status"] == "prompt":
            answers = [mfa.password() if "assword" in p["text"] else the_code
                       for p in reply["prompts"]]
            code, reply = api(alice, "alice", "POST", "login/mfa",
                              {"loginId": reply["loginId"], "answers": answers})
        assert (code, reply) == (200, {"status": "connected", "hpc": "mfa"}), reply
        code, status = api(alice, "alice", "GET", "cluster-status?refresh=true")
        assert status["mfa"] == {"status": "idle", "login": "connected"}
        code, status = api(contexts["bob"], "bob", "GET", "cluster-status?refresh=true")
        assert status["mfa"]["login"] == "required"
        # Without the XSRF token a login is refused, as every POST is.
        response = alice.request.fetch(f"{HUB}/user/alice/api/hpc/login/mfa", method="POST",
                                       data="{}", headers={"Content-Type": "application/json"})
        assert response.status == 403
    finally:
        for c in contexts.values():
            c.close()
