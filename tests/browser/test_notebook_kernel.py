"""A notebook whose kernel runs inside the job, in Chromium: the job's kernel appears in the
Launcher once the job runs (the sidebar refreshes the kernelspecs; no reload), a notebook made
from it prints the job's SLURM_JOB_ID and its node's name, answers input(), and an interrupted
time.sleep(100) stops with KeyboardInterrupt, a restart from the toolbar brings a new process
in the same job, a second notebook gets a kernel of its own in the same job; the running card
lists the kernel; and when the job is cancelled under the kernel, the notebook says why."""

from __future__ import annotations

import re
import subprocess

import pytest

from test_sidebar import LOAD, card, lab_server, open_panel, wait_badge

KERNEL_DISCOVERY = "/opt/jupyter-hpc-sandbox/kernel-venv/bin/jupyter kernelspec list --json"


@pytest.fixture
def lab(sandbox_cluster, tmp_path, request):
    yield from lab_server(tmp_path, request, {
        "gemini": dict(sandbox_cluster, job_name="ui-kernel", kernel_discovery=KERNEL_DISCOVERY),
    }, launch_timeout=60.0)


def run_cell(page, code: str) -> None:
    """Type code into the notebook's last cell and run it (Shift+Enter). A cell run in the
    moment its notebook gets its kernel can be dropped by JupyterLab (its prompt stays
    "[ ]:", nothing is sent): as a person would, it is run again, once."""
    cells = page.locator(".jp-NotebookPanel:visible .jp-CodeCell")
    index = cells.count() - 1
    cells.nth(index).locator(".cm-content").click()
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")
    prompt = cells.nth(index).locator(".jp-InputPrompt")
    page.wait_for_timeout(3000)
    if prompt.text_content().strip() in ("[ ]:", ""):
        cells.nth(index).locator(".cm-content").click()
        page.keyboard.press("Control+Enter")


def kernel_idle(page) -> None:
    """The shown notebook's own kernel has started and answered (its toolbar says idle). The
    status bar is not enough: every notebook of the job's kernel has the same name there. A
    cell run before the notebook has its kernel is dropped by JupyterLab (with any kernel)."""
    page.locator(".jp-NotebookPanel:visible .jp-Notebook-ExecutionIndicator[data-status=idle]"
                 ).first.wait_for(timeout=LOAD)


def pid_after(output, label: str) -> int:
    """The process id printed after label in the visible notebook's outputs."""
    text = output.filter(has_text=label).last.text_content()
    return int(re.search(rf"{re.escape(label)}\s+(\d+)", text).group(1))


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
        kernel_idle(page)
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

        # Restart from the toolbar: a new process, in the same job.
        run_cell(page, "print('before', os.getpid())")
        before = pid_after(output, "before")
        page.locator(".jp-NotebookPanel:visible [data-command='notebook:restart-kernel']"
                     ).first.click()
        page.locator(".jp-Dialog .jp-mod-accept").click()  # ("Restart")
        kernel_idle(page)
        run_cell(page, "import os\nprint('after', os.environ['SLURM_JOB_ID'], os.getpid())")
        output.filter(has_text=f"after {job} ").first.wait_for(timeout=LOAD)
        after = pid_after(output, f"after {job}")
        assert after != before

        # A second notebook, on a kernel of its own in the same job.
        page.get_by_role("menuitem", name="File", exact=True).click()
        page.get_by_role("menuitem", name="New Launcher").click()
        kernel_card.first.click()
        # (the new notebook is the one shown, before anything is typed: an empty one)
        page.wait_for_function(
            "() => document.querySelectorAll('.jp-NotebookPanel').length === 2 && "
            "[...document.querySelectorAll('.jp-NotebookPanel')].some(p => p.offsetParent "
            "!== null && !p.querySelector('.jp-OutputArea-output'))", timeout=LOAD)
        kernel_idle(page)
        run_cell(page, "import os\nprint('second', os.environ['SLURM_JOB_ID'], os.getpid())")
        output.filter(has_text=f"second {job} ").first.wait_for(timeout=LOAD)
        assert pid_after(output, f"second {job}") != after
        assert len(lab.call("GET", "cluster-status")[1]["gemini"]["kernels"]) == 1  # one spec
        page.screenshot(path=artifacts / "kernel-two-notebooks.png")

        # The job is cancelled under the kernels (outside this server): the notebook says why
        # (no "Kernel Restarting": a restart cannot work once the job is gone).
        subprocess.run(["scancel", job], check=True)
        dialog = page.locator(".jp-Dialog", has_text=f"gemini's job {job} ended outside this "
                                                     "server").first
        dialog.wait_for(timeout=LOAD)
        assert "launch a new job from the HPC panel" in dialog.text_content()
        page.screenshot(path=artifacts / "kernel-job-ended.png")
        assert page.locator(".jp-Dialog", has_text="Kernel Restarting").count() == 0
        wait_badge(page, "idle")
    finally:
        page.close()
