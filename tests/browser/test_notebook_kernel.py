"""A notebook whose kernel runs inside the job, in Chromium: the job's kernel appears in the
Launcher once the job runs (the sidebar refreshes the kernelspecs; no reload), a notebook made
from it prints the job's SLURM_JOB_ID and its node's name, answers input(), and an interrupted
time.sleep(100) stops with KeyboardInterrupt; the running card lists the kernel."""

from __future__ import annotations

import pytest

from test_sidebar import LOAD, card, lab_server, open_panel, wait_badge

KERNEL_DISCOVERY = "/opt/jupyter-hpc-sandbox/kernel-venv/bin/jupyter kernelspec list --json"


@pytest.fixture
def lab(sandbox_cluster, tmp_path, request):
    yield from lab_server(tmp_path, request, {
        "gemini": dict(sandbox_cluster, job_name="ui-kernel", kernel_discovery=KERNEL_DISCOVERY),
    }, launch_timeout=60.0)


def run_cell(page, code: str) -> None:
    """Type code into the notebook's last cell and run it (Shift+Enter)."""
    cell = page.locator(".jp-NotebookPanel:visible .jp-Cell .cm-content").last
    cell.click()
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")


def test_a_notebook_from_the_launcher_runs_in_the_job(browser, lab, artifacts):
    page = open_panel(browser, lab)
    try:
        wait_badge(page, "idle")
        form = card(page).locator("form")
        form.locator("input[name=mem]").fill("1G")
        card(page).get_by_role("button", name="Launch").click()
        wait_badge(page, "running")
        job = card(page).locator(".jp-HPCPanel-jobId").text_content()

        # The running card names the job's kernel.
        card(page).locator(".jp-HPCPanel-kernels", has_text="Python 3 (ipykernel)").wait_for(
            timeout=LOAD)
        # The Launcher shows the job's kernel by itself (the sidebar refreshed the specs).
        name = f"on gemini (job {job}, node vm)"
        launcher = page.locator(".jp-Launcher-section", has_text="Notebook")
        if not launcher.count():
            page.keyboard.press("Control+Shift+L")  # (a new Launcher)
        kernel_card = page.locator(".jp-LauncherCard[data-category=Notebook]", has_text=name)
        # (and a console on it, too)
        page.locator(".jp-LauncherCard[data-category=Console]", has_text=name).wait_for(
            timeout=LOAD)
        kernel_card.wait_for(timeout=LOAD)
        page.screenshot(path=artifacts / "kernel-launcher.png")
        kernel_card.click()

        # The notebook's kernel is the job's: its SLURM_JOB_ID, its node.
        # (the kernel has started and answered: the status bar says Idle)
        page.locator(".jp-StatusBar-Widget", has_text=f"{name} | Idle").wait_for(timeout=LOAD)
        run_cell(page, "import os, socket\nprint('job', os.environ['SLURM_JOB_ID'], "
                       "'on', socket.gethostname())")
        output = page.locator(".jp-NotebookPanel:visible .jp-OutputArea-output")
        output.filter(has_text=f"job {job} on vm").first.wait_for(timeout=LOAD)

        # input(): the notebook's own input box, answered.
        run_cell(page, "name = input('Your name? ')\nprint('hello', name)")
        box = page.locator(".jp-NotebookPanel:visible .jp-Stdin-input")
        box.wait_for(timeout=LOAD)
        box.fill("alice")
        box.press("Enter")
        output.filter(has_text="hello alice").first.wait_for(timeout=LOAD)

        # Interrupt time.sleep(100) from the notebook's toolbar.
        run_cell(page, "import time\ntime.sleep(100)")
        page.wait_for_timeout(1500)
        page.locator(".jp-NotebookPanel:visible [data-command='notebook:interrupt-kernel']"
                     ).first.click()
        output.filter(has_text="KeyboardInterrupt").first.wait_for(timeout=LOAD)
        page.screenshot(path=artifacts / "kernel-notebook.png")

        # The running card lists the job's kernel.
        status = lab.call("GET", "cluster-status")[1]["gemini"]
        assert [k["displayName"] for k in status["kernels"]] == [
            f"Python 3 (ipykernel) {name}"]
    finally:
        page.close()
