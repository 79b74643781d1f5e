"""The sidebar's "Log in" dialog in Chromium, for a cluster whose login node asks for the Unix
password and then a TOTP code (the sandbox's MFA sshd on 127.0.0.1:2223). The test types what a
researcher would: the password, a wrong code, then the password and a right code it computes."""

from __future__ import annotations

import pytest

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


def answer(page, text: str, value: str) -> None:
    """Type into the dialog's field for that prompt and press Enter."""
    dialog = page.locator(".jp-Dialog")
    field = dialog.locator(".jp-HPCLogin-field", has_text=text).locator("input")
    field.wait_for(timeout=30_000)
    assert field.get_attribute("type") == "password"  # the login node said: do not echo
    field.fill(value)
    field.press("Enter")
    page.wait_for_function(
        "(v) => ![...document.querySelectorAll('.jp-HPCLogin-answer')].some(i => i.value === v)",
        arg=value, timeout=30_000)  # that dialog is gone


@pytest.mark.parametrize("lab", ["/", "/user/alice/"], indirect=True)
def test_log_in_with_password_and_code_from_the_sidebar(browser, lab, artifacts):
    tag = "root" if lab.base_url == "/" else "alice"
    page = open_panel(browser, lab)
    try:
        mfa_card = card(page, "mfa")
        login = mfa_card.get_by_role("button", name="Log in")
        login.wait_for(timeout=LOAD)
        assert mfa_card.get_by_role("button", name="Launch").count() == 0
        mfa_card.get_by_text("asks for a password or one-time code").wait_for()
        assert mfa_card.locator(".jp-HPCPanel-badge").text_content() == "login"
        page.screenshot(path=artifacts / f"login-required-{tag}.png")

        login.click()
        dialog = page.locator(".jp-Dialog")
        host = f"The login node {MFA_USER}@127.0.0.1:{mfa.PASSWORD_PORT} asks:"
        dialog.get_by_text(host).wait_for()
        page.screenshot(path=artifacts / f"login-password-{tag}.png")
        answer(page, "Password:", mfa.password())
        answer(page, "Verification code:", mfa.wrong_code())
        # Refused: the dialog says so and starts again from the password.
        dialog.locator(".jp-HPCLogin-error", has_text="refused the login").wait_for(
            timeout=30_000)
        page.screenshot(path=artifacts / f"login-wrong-code-{tag}.png")
        answer(page, "Password:", mfa.password())
        answer(page, "Verification code:", mfa.fresh_code())

        # The card turns to its normal state without a reload: Launch, and Log out.
        wait_badge(page, "idle", hpc="mfa")
        mfa_card.get_by_role("button", name="Launch").wait_for()
        mfa_card.get_by_role("button", name="Log out").wait_for()
        # What the cluster offers is read once logged in (status asks sinfo in the background
        # and the panel asks again): its partitions come into the form by themselves.
        mfa_card.locator("[name=partition] option", has_text="debug (default)").first.wait_for(
            state="attached", timeout=30_000)
        options = mfa_card.locator("[name=partition] option").all_text_contents()
        assert any(o.startswith("debug (default)") for o in options), options
        assert mfa_card.get_by_role("button", name="Log in").count() == 0
        page.screenshot(path=artifacts / f"login-done-{tag}.png")
        assert lab.call("GET", "cluster-status")[1]["mfa"] == {"status": "idle",
                                                               "login": "connected"}

        if tag == "root":
            # VS Code on the cluster, over the logged-in connection.
            form = mfa_card.locator("form")
            form.locator("input[name=mem]").fill("1G")
            mfa_card.get_by_role("button", name="Launch").click()
            wait_badge(page, "running", hpc="mfa")
            jobs = slurm_jobs(MFA_USER)  # the job runs as the cluster user who logged in
            assert len(jobs) == 1 and jobs[0]["name"].startswith("ui-mfa-"), jobs
            with page.context.expect_page() as opened:
                mfa_card.get_by_role("button", name="Open VS Code").click()
            vscode = opened.value
            vscode.locator(".monaco-workbench").wait_for(timeout=LOAD)
            assert f"{lab.base_url}hpc/mfa/code/" in vscode.url
            vscode.screenshot(path=artifacts / "vscode-after-mfa-login.png")
            vscode.close()
    finally:
        page.close()
