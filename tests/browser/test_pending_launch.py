"""A launch that outlasts launch_timeout, as behind a proxy with a read timeout (nginx's
proxy_read_timeout is 60 s): the server answers `pending` in time, the sidebar shows the queued
job without an error, keeps following the card, and when the node frees up the same card runs
with its Open VS Code button, with no click on Refresh."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from urllib.parse import urlparse

import pytest

from jupyter_process import slurm_jobs
from test_sidebar import LOAD, card, home_marker, lab_server, open_panel, toast, wait_badge

LAUNCH_TIMEOUT = 8.0  # s; the server answers `pending` after this (a proxy would wait 60 s)


@pytest.fixture
def lab(sandbox_cluster, tmp_path, request):
    yield from lab_server(tmp_path, request, {
        "gemini": dict(sandbox_cluster, job_name="ui-pending")}, launch_timeout=LAUNCH_TIMEOUT)


def failures(page):
    """Error notifications the user would see (a failed launch's stays until closed)."""
    return page.locator(".Toastify__toast", has_text=re.compile("failed|error", re.I))


# `lab` before `filled_node`: lab_server cancels every job when it starts.
def test_a_pending_launch_is_followed_until_vscode_opens(browser, lab, artifacts, filled_node):
    marker = home_marker("pending-launch")
    page = open_panel(browser, lab)
    try:
        wait_badge(page, "idle")
        form = card(page).locator("form")
        form.locator("input[name=cpus]").fill("1")
        form.locator("input[name=mem]").fill("1G")
        form.locator("input[name=time]").fill("00:30:00")
        page.wait_for_function("() => !document.querySelector("
                               "'.jp-HPCPanel-card[data-hpc=gemini] .jp-HPCPanel-launch')"
                               ".disabled", timeout=10_000)  # (the form's check has run)

        # The node is full: the launch answers `pending` once launch_timeout has passed.
        # (JupyterLab adds a cache-busting query to its requests.)
        with page.expect_response(lambda r: urlparse(r.url).path.endswith("/api/hpc/launch")
                                  and r.request.method == "POST", timeout=60_000) as answered:
            card(page).get_by_role("button", name="Launch").click()
        launch = answered.value
        assert launch.status == 200
        assert launch.json()["status"] == "pending", launch.json()
        job = launch.json()["jobId"]

        # What the user sees: a note that the job is queued, no error; the card pending with
        # SLURM's reason, its Stop button usable (the launch is over), no Open VS Code yet.
        toast(page, rf"Job {job} on gemini is queued")
        wait_badge(page, "pending")
        card(page).locator(".jp-HPCPanel-reason", has_text="Resources: waiting for free nodes"
                           ).wait_for(timeout=60_000)
        assert card(page).locator(".jp-HPCPanel-jobId").text_content() == job
        assert card(page).get_by_role("button", name="Stop").is_enabled()
        assert card(page).get_by_role("button", name="Open VS Code").count() == 0
        assert failures(page).count() == 0
        assert [(j["id"], j["state"]) for j in slurm_jobs()] == [(job, "PENDING")]
        page.screenshot(path=artifacts / "pending-launch-queued.png")

        # The other user's job ends: the card follows the same job to running by itself.
        subprocess.run(["scancel", filled_node], check=True)
        card(page).get_by_role("button", name="Open VS Code").wait_for(timeout=LOAD)
        wait_badge(page, "running")
        assert card(page).locator(".jp-HPCPanel-jobId").text_content() == job
        assert failures(page).count() == 0
        # The launch's steps are over (no step still "pending"), and the running session is
        # the active one (no Switch on the only running cluster).
        assert card(page).locator(".jp-HPCPanel-progress .jp-mod-current",
                                  has_text="pending").count() == 0
        assert card(page).get_by_role("button", name="Switch").count() == 0
        page.screenshot(path=artifacts / "pending-launch-running.png")

        # Open VS Code: the workbench from the compute node, with the home folder's files.
        with page.context.expect_page() as opened:
            card(page).get_by_role("button", name="Open VS Code").click()
        vscode = opened.value
        vscode.get_by_text(os.path.basename(marker)).first.wait_for(timeout=LOAD)
        assert f"{lab.base_url}hpc/gemini/code/" in vscode.url
        vscode.screenshot(path=artifacts / "pending-launch-vscode.png")
        vscode.close()
        assert [(j["id"], j["state"]) for j in slurm_jobs()] == [(job, "RUNNING")]
    finally:
        page.close()
        shutil.rmtree(marker, ignore_errors=True)
