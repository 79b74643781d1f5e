"""Helpers for the tests through the sandbox's JupyterHub: its REST API with the sandbox's
service token, the users' SLURM jobs, and logging in with the Hub's own form."""

from __future__ import annotations

import json
import pathlib
import subprocess
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
SANDBOX = ROOT / ".sandbox"
HUB = "http://127.0.0.1:8000"

def hub_api(method: str, path: str, body: dict | None = None) -> tuple[int, dict | None]:
    """The Hub's REST API with the sandbox's service token (read users, start/stop servers)."""
    token = (SANDBOX / "hub" / "service-token").read_text().strip()
    request = urllib.request.Request(
        f"{HUB}/hub/api/{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            text = r.read()
            return r.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        return e.code, None

def jobs_of(user: str) -> list[dict]:
    out = subprocess.run(["squeue", "-h", "-u", user, "-o", "%i|%j|%T|%u"],
                         capture_output=True, text=True, check=True).stdout
    return [dict(zip(("id", "name", "state", "user"), line.split("|"), strict=True))
            for line in out.splitlines() if line.strip()]

def log_in(browser, user: str, password: str):
    """A browser context of its own, logged in through the Hub's login form, at JupyterLab."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(f"{HUB}/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_url(f"{HUB}/user/{user}/lab**", timeout=120_000)
    return context, page

