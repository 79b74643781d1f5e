"""The JupyterLab sidebar in Chromium against the sandbox: a researcher's whole flow from the
HPC panel, the inline validation, the pending state, the warnings, the palette and the Launcher.
Screenshots of each state go to test-artifacts/ (look at them)."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import time
import uuid

import pytest

from jupyter_process import Server, cancel_all_jobs, home_file, slurm_jobs

LOAD = 120_000  # ms


def home_marker(stem: str) -> str:
    """A folder of hpcuser's home (with a file in it) named to come first in VS Code's
    Explorer: folders come before files there, and a home that has seen many runs (the
    kernels' .ipython, .jupyter and .local, projects) has more entries than the Explorer shows
    at once. Returns its path; the test removes it."""
    name = f"0-{stem}-{uuid.uuid4().hex[:8]}"
    home_file("hpcuser", f"{name}/readme.txt", "from the sidebar test\n")
    return os.path.join(pwd.getpwnam("hpcuser").pw_dir, name)


@pytest.fixture
def lab(sandbox_cluster, tmp_path, request):
    yield from lab_server(tmp_path, request, {
        name: dict(sandbox_cluster, job_name=f"ui-{name}") for name in ("gemini", "apollo")})


def lab_server(tmp_path, request, clusters: dict, launch_timeout: float = 20.0,
               lab_settings: dict | None = None):
    """JupyterLab with these clusters (their job names made unique), at the base_url the test
    is parametrized with (default /); no job before or after. lab_settings: the sidebar's
    settings (pollSeconds, ...) as a user would set them, in a settings folder of this server's
    own, with a workspace of its own (JupyterLab opens as for a new user)."""
    cancel_all_jobs()
    tag = uuid.uuid4().hex[:6]
    clusters = {name: dict(c, job_name=f"{c['job_name']}-{tag}") for name, c in clusters.items()}
    extra = f"c.HPCManager.launch_timeout = {launch_timeout}\n"
    if lab_settings is not None:
        settings = tmp_path / "lab-user-settings"
        (settings / "jupyter-hpc-manager").mkdir(parents=True, exist_ok=True)
        (settings / "jupyter-hpc-manager" / "plugin.jupyterlab-settings").write_text(
            json.dumps(lab_settings))
        extra += (f"c.LabApp.user_settings_dir = {str(settings)!r}\n"
                  f"c.LabApp.workspaces_dir = {str(tmp_path / 'lab-workspaces')!r}\n")
    server = Server(tmp_path, clusters, base_url=getattr(request, "param", "/"), extra=extra)
    server.start()
    yield server
    server.stop()
    cancel_all_jobs()


def open_panel(browser, lab):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{lab.url}lab?token={lab.token}")
    tab = page.get_by_role("tab", name="HPC")
    tab.wait_for(timeout=LOAD)
    page.wait_for_timeout(500)  # the layout restorer may open the panel itself
    if tab.get_attribute("aria-selected") != "true":
        tab.click()
    page.locator(".jp-HPCPanel-card[data-hpc=gemini]").wait_for(timeout=LOAD)
    return page


def card(page, hpc="gemini"):
    return page.locator(f".jp-HPCPanel-card[data-hpc={hpc}]")


def badge(page, hpc="gemini"):
    return card(page, hpc).locator(".jp-HPCPanel-badge")


def wait_badge(page, text, hpc="gemini", timeout=LOAD):
    page.wait_for_function(
        "([hpc, text]) => document.querySelector("
        "`.jp-HPCPanel-card[data-hpc=${hpc}] .jp-HPCPanel-badge`)?.textContent === text",
        arg=[hpc, text], timeout=timeout)


def toast(page, pattern, timeout=30_000):
    page.locator(".Toastify__toast", has_text=re.compile(pattern)).first.wait_for(
        timeout=timeout)


@pytest.mark.parametrize("lab", ["/", "/user/alice/"], indirect=True)
def test_launch_open_and_stop_from_the_panel(browser, lab, artifacts):
    tag = "root" if lab.base_url == "/" else "alice"
    marker = home_marker("sidebar")
    page = open_panel(browser, lab)
    try:
        wait_badge(page, "idle")
        form = card(page).locator("form")
        assert form.locator("input[name=cpus]").input_value() == "2"  # defaults from /status
        assert form.locator("input[name=mem]").input_value() == "40G"
        assert form.locator("input[name=time]").input_value() == "12:00:00"
        page.screenshot(path=artifacts / f"panel-idle-{tag}.png")

        # A bad value: the message at once, Launch disabled, nothing submitted.
        form.locator("input[name=cpus]").fill("0")
        card(page).get_by_text("Invalid CPU value: must be integer 1-128").wait_for()
        assert card(page).get_by_role("button", name="Launch").is_disabled()
        form.locator("input[name=cpus]").press("Enter")
        page.screenshot(path=artifacts / f"panel-invalid-{tag}.png")
        time.sleep(1)
        assert slurm_jobs() == []

        form.locator("input[name=cpus]").fill("1")
        form.locator("input[name=mem]").fill("1G")
        form.locator("input[name=time]").fill("00:30:00")
        card(page).get_by_role("button", name="Launch").click()
        card(page).locator(".jp-HPCPanel-progress").wait_for()
        wait_badge(page, "running")
        clock = card(page).locator(".jp-HPCPanel-timeLeft")
        first = clock.text_content()
        assert re.fullmatch(r"00:[23]\d:\d\d", first), first
        page.wait_for_function(
            "(t) => document.querySelector('.jp-HPCPanel-card[data-hpc=gemini] "
            ".jp-HPCPanel-timeLeft')?.textContent !== t", arg=first, timeout=5000)  # it ticks
        assert card(page).locator(".jp-HPCPanel-jobId").text_content() == slurm_jobs()[0]["id"]
        assert card(page).locator(".jp-HPCPanel-active").is_visible()
        page.screenshot(path=artifacts / f"panel-running-{tag}.png")

        # A second session, on apollo (launched elsewhere, e.g. over REST): it becomes the
        # active one; Switch on gemini's card takes hpc/code/ back.
        code, reply = lab.call("POST", "launch", {"hpc": "apollo", "mem": "1G"})
        assert (code, reply["status"]) == (200, "running"), reply
        page.locator(".jp-HPCPanel-refresh").click()
        wait_badge(page, "running", hpc="apollo")
        card(page, "apollo").locator(".jp-HPCPanel-active").wait_for()
        card(page).get_by_role("button", name="Switch").click()
        card(page).locator(".jp-HPCPanel-active").wait_for()
        assert card(page, "apollo").get_by_role("button", name="Switch").is_visible()
        assert lab.call("GET", "status")[1]["activeHpc"] == "gemini"
        page.screenshot(path=artifacts / f"panel-two-sessions-{tag}.png")

        with page.context.expect_page() as opened:
            card(page).get_by_role("button", name="Open VS Code").click()
        vscode = opened.value
        vscode.get_by_text(os.path.basename(marker)).first.wait_for(timeout=LOAD)
        assert f"{lab.base_url}hpc/gemini/code/" in vscode.url
        vscode.screenshot(path=artifacts / f"vscode-from-panel-{tag}.png")
        vscode.close()

        card(page).get_by_role("button", name="Stop").click()
        dialog = page.locator(".jp-Dialog")
        dialog.get_by_text("also cancel the SLURM job").wait_for()
        page.screenshot(path=artifacts / f"panel-stop-dialog-{tag}.png")
        assert dialog.locator(".jp-HPCPanel-cancelJob input").is_checked()
        dialog.get_by_role("button", name="Stop").click()
        wait_badge(page, "idle")
        assert [j["name"].split("-")[1] for j in slurm_jobs()] == ["apollo"]  # gemini's is gone
        page.screenshot(path=artifacts / f"panel-stopped-{tag}.png")
    finally:
        page.close()
        shutil.rmtree(marker, ignore_errors=True)


def test_pending_warnings_palette_and_launcher(browser, lab, artifacts, filled_node):
    page = open_panel(browser, lab)
    try:
        wait_badge(page, "idle")
        # The Launcher has a card per cluster.
        page.locator(".jp-LauncherCard", has_text="VS Code on gemini").wait_for(timeout=LOAD)
        page.locator(".jp-LauncherCard", has_text="VS Code on apollo").wait_for()

        # Another user's job fills the node: SLURM keeps ours pending, the panel says why and
        # when SLURM expects it to start, counting down.
        form = card(page).locator("form")
        form.locator("input[name=cpus]").fill("4")
        form.locator("input[name=mem]").fill("1G")
        time.sleep(0.5)  # (the form's check runs a moment after typing stops)
        card(page).get_by_role("button", name="Launch").click()
        wait_badge(page, "pending")
        card(page).locator(".jp-HPCPanel-reason", has_text="Resources: waiting for free nodes"
                           ).wait_for(timeout=60_000)
        estimate = card(page).locator(".jp-HPCPanel-estimate")
        estimate.wait_for(timeout=60_000)
        first = estimate.text_content()
        assert first.startswith("in 00:"), first
        page.wait_for_function(
            "(t) => document.querySelector('.jp-HPCPanel-card[data-hpc=gemini] "
            ".jp-HPCPanel-estimate')?.textContent !== t", arg=first, timeout=5000)  # it ticks
        page.screenshot(path=artifacts / "panel-pending.png")
        card(page).get_by_role("button", name="Stop").click()
        page.locator(".jp-Dialog").get_by_role("button", name="Stop").click()
        wait_badge(page, "idle")
        assert slurm_jobs() == []
        subprocess.run(["scancel", filled_node], check=True)

        # Less time than the warning threshold (15 minutes): a warning at once.
        form = card(page, "apollo").locator("form")
        form.locator("input[name=mem]").fill("1G")
        form.locator("input[name=time]").fill("00:10:00")
        card(page, "apollo").get_by_role("button", name="Launch").click()
        wait_badge(page, "running", hpc="apollo")
        toast(page, "minutes left")
        page.screenshot(path=artifacts / "panel-warning.png")

        # The palette offers the commands that fit now: with a session running, all three.
        page.keyboard.press("Control+Shift+C")
        page.keyboard.type("VS Code")
        palette = page.locator(".lm-CommandPalette")
        for label in ("Launch VS Code on the default cluster", "Open VS Code (active HPC session)",
                      "Stop VS Code (active HPC session)"):
            palette.get_by_text(label).wait_for(timeout=10_000)
        page.screenshot(path=artifacts / "palette.png")
        page.keyboard.press("Escape")

        # Ended behind the panel's back: a notice on the next refresh.
        os.system("scancel -u hpcuser")
        while slurm_jobs():
            time.sleep(0.25)
        page.locator(".jp-HPCPanel-refresh").click()
        wait_badge(page, "idle", hpc="apollo")
        toast(page, "ended outside this server")  # (and says why)
        page.screenshot(path=artifacts / "panel-ended.png")

        # With nothing running, Stop and Open are not offered (isEnabled follows the model).
        page.keyboard.press("Control+Shift+C")
        page.keyboard.type("VS Code")
        palette.get_by_text("Launch VS Code on the default cluster").wait_for(timeout=10_000)
        assert not palette.get_by_text("Stop VS Code (active HPC session)").is_visible()
        page.keyboard.press("Escape")

    finally:
        page.close()
