"""Idle auto-cancel in Chromium against the sandbox (gemini: idle_cancel_minutes 0.5): the panel
warns with a Keep it button that keeps the job; Give back time lowers the running job's limit;
typing in VS Code's terminal keeps it; a VS Code
tab left open and focused with no input (the editor's own keep-alives and pings go on), with the
panel polling every 5 s, is cancelled, and the card says why the job ended."""

from __future__ import annotations

import json
import time
from urllib.parse import urlparse

import pytest

from jupyter_process import home_file, slurm_jobs, squeue_of
from test_sidebar import LOAD, card, lab_server, open_panel, toast, wait_badge

IDLE_MINUTES = 0.5


@pytest.fixture
def lab(sandbox_cluster, tmp_path, request):
    yield from lab_server(tmp_path, request, {
        "gemini": dict(sandbox_cluster, job_name="ui-idle", idle_cancel_minutes=IDLE_MINUTES),
    }, launch_timeout=60.0, lab_settings={"pollSeconds": 5})


def test_keep_typing_keeps_and_an_unused_tab_is_cancelled(browser, lab, artifacts):
    page = open_panel(browser, lab)
    vscode = None
    try:
        wait_badge(page, "idle")
        card(page).locator("form input[name=mem]").fill("1G")
        card(page).get_by_role("button", name="Launch").click()
        wait_badge(page, "running")
        job = card(page).locator(".jp-HPCPanel-jobId").text_content()
        card(page).locator(".jp-HPCPanel-idle").wait_for(timeout=LOAD)  # the idle clock

        # The warning comes (5 minutes before the cancel: at once here), with Keep it.
        warning = page.locator(".Toastify__toast", has_text=f"gemini's job {job} has been idle")
        warning.first.wait_for(timeout=LOAD)
        page.screenshot(path=artifacts / "idle-warning.png")
        with page.expect_response(lambda r: urlparse(r.url).path.endswith("/api/hpc/keep/gemini")
                                  and r.request.method == "POST") as kept:
            warning.first.get_by_role("button", name="Keep it").click()
        assert kept.value.status == 200

        # Give back time: the running job's limit goes down, as SLURM says.
        card(page).get_by_role("button", name="Give back time").click()
        dialog = page.locator(".jp-Dialog")
        dialog.get_by_text("only an operator").wait_for()
        dialog.locator("input[name=time]").fill("00:20:00")
        dialog.get_by_role("button", name="Set").click()
        toast(page, f"Job {job} on gemini now has 00:20:00")
        assert squeue_of(job, "%l") == "20:00"
        page.wait_for_function(
            "() => /^00:(19|20):\\d\\d$/.test(document.querySelector("
            "'.jp-HPCPanel-card[data-hpc=gemini] .jp-HPCPanel-timeLeft')?.textContent ?? '')",
            timeout=30_000)

        # VS Code, and a person typing in its terminal for twice the idle time. (The terminal
        # drawn in the DOM, so that the test can read it; no welcome page.)
        job_name = next(j["name"] for j in slurm_jobs() if j["id"] == job)
        home_file("hpcuser", f".jupyter-hpc-manager/{job_name}/data/User/settings.json",
                  json.dumps({"terminal.integrated.gpuAcceleration": "off",
                              "workbench.startupEditor": "none",
                              "security.workspace.trust.enabled": False}))
        with page.context.expect_page() as opened:
            card(page).get_by_role("button", name="Open VS Code").click()
        vscode = opened.value
        vscode.locator(".explorer-folders-view").wait_for(timeout=LOAD)
        vscode.keyboard.press("Control+Backquote")
        rows = vscode.locator(".xterm-rows")
        rows.first.wait_for(timeout=LOAD)
        vscode.locator(".xterm").first.click()
        until = time.monotonic() + IDLE_MINUTES * 60 * 2
        n = 0
        while time.monotonic() < until:
            n += 1
            vscode.keyboard.type(f"echo typed-{n}\n", delay=50)
            rows.filter(has_text=f"typed-{n}").first.wait_for(timeout=30_000)
            time.sleep(8)
        assert [j["id"] for j in slurm_jobs()] == [job]  # kept by the typing
        vscode.screenshot(path=artifacts / "idle-typing.png")

        # Nobody types any more: the tab stays open and focused, the panel polls; cancelled.
        vscode.bring_to_front()
        deadline = time.monotonic() + IDLE_MINUTES * 60 * 3
        while slurm_jobs() and time.monotonic() < deadline:
            time.sleep(2)
        assert slurm_jobs() == [], "the unused job was not cancelled"
        page.bring_to_front()
        wait_badge(page, "idle", timeout=60_000)
        card(page).locator(".jp-HPCPanel-lastEnd",
                           has_text=f"job {job} was cancelled: nobody had used it").wait_for(
            timeout=30_000)
        toast(page, f"job {job} was cancelled: nobody had used it")
        page.screenshot(path=artifacts / "idle-cancelled.png")
    finally:
        if vscode is not None:
            vscode.close()
        page.close()
