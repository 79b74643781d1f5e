"""The Launcher card of a cluster that needs a login: a click opens the login dialog (not an
error toast), and once the password and code are in, the launch goes on by itself and VS Code
opens in the tab the click opened."""

from __future__ import annotations

import re

import pytest
from test_login import answer

import mfa
from jupyter_process import MFA_USER, slurm_jobs
from test_sidebar import LOAD, card, lab_server, open_panel, wait_badge


@pytest.fixture
def lab(sandbox_cluster, tmp_path, request):
    yield from lab_server(tmp_path, request, {
        "gemini": dict(sandbox_cluster, job_name="ui-gemini"),
        "mfa": dict(sandbox_cluster, port=mfa.PASSWORD_PORT, user=MFA_USER, identity_file="",
                    job_name="ui-mfa"),
    }, launch_timeout=60.0)


def test_a_login_required_launcher_card_logs_in_then_launches(browser, lab, artifacts):
    page = open_panel(browser, lab)
    try:
        card(page, "mfa").get_by_role("button", name="Log in").wait_for(timeout=LOAD)
        launcher_card = page.locator(".jp-LauncherCard", has_text="VS Code on mfa")
        launcher_card.wait_for(timeout=LOAD)
        with page.context.expect_page() as opened:
            launcher_card.click()
        tab = opened.value
        # The login dialog, and no error about the login.
        dialog = page.locator(".jp-Dialog")
        dialog.get_by_text(f"The login node {MFA_USER}@127.0.0.1:{mfa.PASSWORD_PORT} asks:"
                           ).wait_for(timeout=30_000)
        errors = page.locator(".Toastify__toast", has_text=re.compile("failed|401"))
        assert errors.count() == 0
        answer(page, "Password:", mfa.password())
        code = dialog.locator(".jp-HPCLogin-field", has_text="Verification code:").locator("input")
        code.wait_for(timeout=30_000)
        # Filled from an authenticator or SMS, never kept by the browser.
        assert code.get_attribute("autocomplete") == "one-time-code"
        answer(page, "Verification code:", mfa.fresh_code())

        # The launch goes on by itself: the card runs and the tab the click opened gets VS Code.
        wait_badge(page, "running", hpc="mfa")
        tab.wait_for_url(re.compile(re.escape(f"{lab.base_url}hpc/mfa/code/")), timeout=LOAD)
        tab.locator(".monaco-workbench").wait_for(timeout=LOAD)
        assert page.locator(".Toastify__toast", has_text=re.compile("failed")).count() == 0
        jobs = slurm_jobs(MFA_USER)
        assert len(jobs) == 1 and jobs[0]["name"].startswith("ui-mfa-"), jobs
        tab.screenshot(path=artifacts / "launcher-login-vscode.png")
        tab.close()
    finally:
        page.close()
        lab.call("POST", "stop/mfa", {"cancelJob": True})
