"""The sidebar's launch form in Chromium against the sandbox's partitions (debug: MaxTime
12:00:00; gpu: two GPUs; long): a too-long time refused inline with the partition's limit, a
preset filling the form, a GPU launch whose GPU shows on the card and in squeue, and the folder
VS Code opens."""

from __future__ import annotations

import os
import pwd
import shutil
import time
import uuid

import pytest

from jupyter_process import home_file, slurm_jobs, squeue_of
from test_sidebar import LOAD, card, lab_server, open_panel, wait_badge

PRESETS = {"gpu-small": {"partition": "gpu", "gpus": "1", "cpus": "2", "mem": "1G",
                         "time": "00:30:00"}}


@pytest.fixture
def lab(sandbox_cluster, tmp_path, request):
    yield from lab_server(tmp_path, request, {
        "gemini": dict(sandbox_cluster, job_name="ui-gemini", partition="", presets=PRESETS),
    }, launch_timeout=60.0)


def more_options(page):
    details = card(page).locator("details.jp-HPCPanel-more")
    if details.get_attribute("open") is None:
        details.locator("summary").click()
    return details


def field(page, name):
    return card(page).locator(f"[name={name}]")


def test_limits_inline_a_preset_and_a_gpu_launch(browser, lab, artifacts):
    page = open_panel(browser, lab)
    try:
        wait_badge(page, "idle")
        more = more_options(page)
        # The partitions from sinfo, with their limits; GPUs only where the partition has them.
        # (status answers from memory: they come into the form once sinfo has answered.)
        field(page, "partition").locator("option", has_text="debug (default)").first.wait_for(
            state="attached", timeout=30_000)
        more = more_options(page)  # (the form was made anew with them)
        # The select shows names (readable in a narrow sidebar, never cut mid-limit); each
        # option's limits are its tooltip, and the chosen one's are written in full under it.
        options = field(page, "partition").locator("option").all_text_contents()
        assert options == ["default", "debug (default)", "gpu", "long"], options
        limits = field(page, "partition").locator("option").evaluate_all(
            "options => options.map(o => o.title)")
        assert any(t.startswith("debug (default): up to 12:00:00, 16 CPUs") for t in limits)
        assert any(t.startswith("gpu: up to 1-00:00:00") and "2 tesla GPUs" in t
                   for t in limits), limits
        assert not more.locator(".jp-HPCPanel-field-gpus").is_visible()
        shown = more.locator(".jp-HPCPanel-limits")
        assert shown.text_content().startswith("debug (default): up to 12:00:00")
        assert " GiB" in shown.text_content()  # memory in human units, not 200000M
        box = shown.bounding_box()
        panel = page.locator(".jp-HPCPanel").bounding_box()
        assert box["x"] + box["width"] <= panel["x"] + panel["width"]  # wrapped, not cut
        # The account and QOS come from SLURM's accounting.
        assert field(page, "account").locator("option").all_text_contents() == [
            "default", "proj-a", "proj-b"]

        # Too long for debug: refused inline, with the partition's limit; nothing is sent.
        field(page, "time").fill("13:00:00")
        card(page).get_by_text("time 13:00:00 exceeds partition debug's MaxTime 12:00:00"
                               ).wait_for(timeout=10_000)
        assert card(page).get_by_role("button", name="Launch").is_disabled()
        assert field(page, "time").get_attribute("aria-invalid") is not None
        page.screenshot(path=artifacts / "form-too-long.png")
        assert slurm_jobs() == []
        # On long it fits.
        field(page, "partition").select_option("long")
        page.wait_for_function("() => !document.querySelector("
                               "'.jp-HPCPanel-card[data-hpc=gemini] .jp-HPCPanel-launch')"
                               ".disabled", timeout=10_000)

        # A preset fills the form.
        field(page, "preset").select_option("gpu-small")
        assert field(page, "partition").input_value() == "gpu"
        assert field(page, "time").input_value() == "00:30:00"
        assert field(page, "gpus").input_value() == "1"
        assert more.locator(".jp-HPCPanel-field-gpus").is_visible()
        page.screenshot(path=artifacts / "form-preset.png")

        # The GPU launch: the GPU is on the card and in squeue.
        card(page).get_by_role("button", name="Launch").click()
        wait_badge(page, "running")
        job = slurm_jobs()[0]["id"]
        assert squeue_of(job, "%P|%b") in ("gpu|gres:gpu:1", "gpu|gres/gpu:1")
        card(page).locator(".jp-HPCPanel-gpus").wait_for()
        assert card(page).locator(".jp-HPCPanel-gpus").text_content() == "1"
        assert card(page).locator(".jp-HPCPanel-partition").text_content() == "gpu"
        page.screenshot(path=artifacts / "form-gpu-running.png")
    finally:
        page.close()


def test_the_folder_opens_in_vscodes_explorer_and_is_offered_next_time(browser, lab, artifacts):
    project = f"form-project-{uuid.uuid4().hex[:6]}"
    home_file("hpcuser", f"{project}/only-in-this-folder.txt", "here\n")
    page = open_panel(browser, lab)
    try:
        wait_badge(page, "idle")
        more_options(page)
        field(page, "workdir").fill("~/nope-no-such-folder")
        card(page).get_by_text("is not a folder on gemini").wait_for(timeout=10_000)
        field(page, "workdir").fill(f"~/{project}")
        field(page, "mem").fill("1G")
        time.sleep(0.5)  # (the check runs a moment after typing stops)
        card(page).get_by_role("button", name="Launch").click()
        wait_badge(page, "running")
        with page.context.expect_page() as opened:
            card(page).get_by_role("button", name="Open VS Code").click()
        vscode = opened.value
        explorer = vscode.locator(".explorer-folders-view")
        explorer.get_by_text("only-in-this-folder.txt").wait_for(timeout=LOAD)
        vscode.screenshot(path=artifacts / "form-folder-explorer.png")
        vscode.close()

        # The next time, "same as last time" brings the folder back.
        card(page).get_by_role("button", name="Stop").click()
        page.locator(".jp-Dialog").get_by_role("button", name="Stop").click()
        wait_badge(page, "idle")
        more_options(page)
        field(page, "preset").select_option(label="Same as last time")
        assert field(page, "workdir").input_value() == f"~/{project}"
        assert field(page, "mem").input_value() == "1G"
    finally:
        page.close()
        shutil.rmtree(os.path.join(pwd.getpwnam("hpcuser").pw_dir, project), ignore_errors=True)
