"""Under the sandbox JupyterHub, a notebook kernel inside alice's job runs as alice: she
launches from her server, the job's kernel shows in her Launcher, and a notebook on it prints
her user name and her job's SLURM_JOB_ID."""

from __future__ import annotations

import pytest
from test_hub import api, clean_jobs  # noqa: F401  (clean_jobs: a fixture, used below)

from hubtools import log_in


@pytest.mark.usefixtures("clean_jobs")
def test_alices_kernel_runs_in_her_job_as_alice(hub, browser, artifacts):
    context, lab = log_in(browser, "alice", hub["alice"])
    try:
        code, reply = api(context, "alice", "POST", "launch", {"hpc": "gemini", "mem": "1G"})
        assert code == 200 and reply["status"] == "running", reply
        job = reply["jobId"]
        code, status = api(context, "alice", "GET", "cluster-status")
        kernels = status["gemini"].get("kernels") or []
        assert [k["name"] for k in kernels] == ["hpc-gemini-python3"], status["gemini"]

        # Her Launcher shows the job's kernel (the panel refreshes the kernelspecs).
        name = f"on gemini (job {job}, node vm)"
        kernel_card = lab.locator(".jp-LauncherCard[data-category=Notebook]", has_text=name)
        kernel_card.wait_for(timeout=120_000)
        kernel_card.click()
        lab.locator(".jp-StatusBar-Widget", has_text=f"{name} | Idle").wait_for(timeout=120_000)
        cell = lab.locator(".jp-NotebookPanel:visible .jp-Cell .cm-content").last
        cell.click()
        lab.keyboard.insert_text(
            "import getpass, os\n"
            "print('user', getpass.getuser(), 'job', os.environ['SLURM_JOB_ID'])")
        lab.keyboard.press("Shift+Enter")
        lab.locator(".jp-NotebookPanel:visible .jp-OutputArea-output",
                    has_text=f"user alice job {job}").first.wait_for(timeout=120_000)
        lab.screenshot(path=artifacts / "hub-kernel-alice.png")
    finally:
        context.close()
