"""A researcher's view: launch over REST, open {base_url}hpc/code/ in Chromium, and VS Code's
workbench from the compute node loads with the home folder in its Explorer and renders a Markdown
preview (a webview); switch and the same URL serves the other cluster; stop. At / and at a
JupyterHub-style /user/alice/."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import uuid

import pytest

from jupyter_process import Server, cancel_all_jobs, home_file
from vscode_ui import markdown_preview

WORKBENCH_TIMEOUT = 120_000  # ms; the first load here takes ~5-20 s


@pytest.fixture
def clusters(sandbox_cluster):
    tag = uuid.uuid4().hex[:6]
    out = {}
    for name in ("gemini", "apollo"):
        job_name = f"browser-{name}-{tag}"
        # Each cluster's IDE gets a window title of its own, so the page shows which one it is.
        home_file("hpcuser", f".jupyter-hpc-manager/{job_name}/data/User/settings.json",
                  json.dumps({"window.title": f"{name.upper()}-IDE ${{rootName}}",
                              "workbench.startupEditor": "none"}))
        out[name] = dict(sandbox_cluster, job_name=job_name)
    return out


@pytest.mark.parametrize("base_url", ["/", "/user/alice/"])
def test_open_vscode_switch_and_stop(browser, clusters, tmp_path, artifacts, base_url):
    cancel_all_jobs()
    # A folder of the home, named to come first in the Explorer (folders come before files, and
    # a home that has seen many runs has more entries than the Explorer shows at once).
    marker = f"0-hello-{uuid.uuid4().hex[:8]}"
    home_file("hpcuser", f"{marker}/readme.txt", "a folder the researcher has in their home\n")
    notes = f"notes-{uuid.uuid4().hex[:8]}.md"
    home_file("hpcuser", f"{marker}/{notes}", f"# Notes {notes}\n\nText.\n")
    server = Server(tmp_path, clusters, base_url=base_url)
    server.start()
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    tag = "root" if base_url == "/" else "alice"
    try:
        for hpc in ("apollo", "gemini"):
            code, reply = server.call("POST", "launch", {"hpc": hpc, "mem": "1G"})
            assert (code, reply.get("status")) == (200, "running"), reply
            assert reply["url"] == f"{base_url}hpc/{hpc}/code/"
        # gemini was launched last, so hpc/code/ serves it.
        page.goto(f"{server.url}hpc/code/?token={server.token}")
        page.get_by_text(marker).first.wait_for(timeout=WORKBENCH_TIMEOUT)
        page.wait_for_function("document.title.startsWith('GEMINI-IDE')", timeout=30_000)
        assert "/login" not in page.url
        page.screenshot(path=artifacts / f"workbench-gemini-{tag}.png")

        # A Markdown preview: a webview, an iframe of the workbench's own origin.
        page.get_by_text(marker).first.click()  # (the folder opens: its notes show)
        preview = markdown_preview(page, notes)
        try:
            preview.get_by_role("heading", name=f"Notes {notes}").wait_for(timeout=60_000)
        finally:
            page.screenshot(path=artifacts / f"markdown-preview-{tag}.png")

        code, reply = server.call("POST", "switch/apollo")
        assert (code, reply["status"]) == (200, "switched")
        page.reload()
        page.get_by_text(marker).first.wait_for(timeout=WORKBENCH_TIMEOUT)
        page.wait_for_function("document.title.startsWith('APOLLO-IDE')", timeout=30_000)
        page.screenshot(path=artifacts / f"workbench-apollo-{tag}.png")

        for hpc in ("apollo", "gemini"):
            code, reply = server.call("POST", f"stop/{hpc}", {"cancelJob": True})
            assert (code, reply["status"]) == (200, "stopped")
        page.goto(f"{server.url}hpc/code/")
        assert "No VS Code session" in page.content()
        link = page.get_by_role("link", name="JupyterLab")
        assert link.get_attribute("href") == f"{base_url}lab"
        page.screenshot(path=artifacts / f"stopped-{tag}.png")
    finally:
        page.close()
        server.stop()
        cancel_all_jobs()
        home = pwd.getpwnam("hpcuser").pw_dir
        shutil.rmtree(os.path.join(home, marker), ignore_errors=True)
