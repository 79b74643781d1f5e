"""Accessibility of the sidebar in Chromium against the sandbox.

axe-core (the labextension's devDependency) checks our own nodes, the panel `.jp-HPCPanel` and
the dialogs we open `.jp-Dialog`, in each state a user meets: idle, a refused value, a pending
job, a running one, the stop dialog and the login dialog. No violation of impact "serious" or
"critical" is allowed; the others are printed. JupyterLab's own chrome is out of scope only
because the checks are scoped to our nodes; no rule is turned off.

A keyboard-only run then does a researcher's whole flow with Tab, Shift+Tab, Enter, Space and
typing: launch, open VS Code, stop (the dialog's checkbox and button), and log in to the cluster
that asks for a password and a one-time code.

The README's pictures come from the first test (`make pictures`)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess

import pytest

import mfa
from chromium import ROOT
from jupyter_process import MFA_USER, SANDBOX_USER, home_file, slurm_jobs
from test_sidebar import LOAD, card, lab_server, open_panel, wait_badge

# A small project for VS Code to open (the README's picture of VS Code shows it).
DEMO = "hpc-demo"
DEMO_FILES = {
    "README.md": "# A project on the cluster\n\nOpened in VS Code on a compute node.\n",
    "train.py": ('"""Runs on the compute node."""\n\nimport os\n\n\n'
                 'def main() -> None:\n'
                 '    print(f"{os.cpu_count()} CPUs on {os.uname().nodename}")\n\n\n'
                 'if __name__ == "__main__":\n    main()\n'),
    "data/samples.csv": "x,y\n1,2\n",
}
AXE = ROOT / "labextension" / "node_modules" / "axe-core" / "axe.min.js"
PANEL = ".jp-HPCPanel"
DIALOG = ".jp-Dialog"


@pytest.fixture
def lab(sandbox_cluster, tmp_path, request):
    # gemini: the partitions come from sinfo (debug, the default: MaxTime 12:00:00); mfa: a
    # login node that asks for the password and a code. Settings and workspace of its own, so
    # the panel looks as it does for a new user (no "same as last time").
    yield from lab_server(tmp_path, request, {
        "gemini": dict(sandbox_cluster, job_name="ui-a11y-gemini", partition=""),
        "mfa": dict(sandbox_cluster, port=mfa.PASSWORD_PORT, user=MFA_USER, identity_file="",
                    job_name="ui-a11y-mfa"),
    }, launch_timeout=8.0, lab_settings={})


def axe(page, selector: str, state: str) -> None:
    """axe-core's default rules on the nodes matching selector: nothing serious or critical."""
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run `make labextension` (jlpm install)")
    if not page.evaluate("() => !!window.axe"):
        page.add_script_tag(path=str(AXE))
    # JupyterLab's <body> is 0 px high with overflow: hidden (the shell is positioned over the
    # viewport, and a body's overflow applies to the viewport: nothing is clipped on screen).
    # axe-core takes the body for a clipping box and counts all text as invisible, so
    # color-contrast checks nothing (dequelabs/axe-core#2218, #1456). While axe runs, the body
    # is as high as the viewport, which changes nothing on screen.
    checked, violations = page.evaluate("""async (selector) => {
        if (!document.querySelector(selector)) {
            throw new Error(`nothing matches ${selector}`);
        }
        const height = document.body.style.height;
        document.body.style.height = '100vh';
        try {
            const result = await axe.run(selector, {resultTypes: ['violations']});
            const contrast = [...result.passes, ...result.violations, ...result.incomplete]
                .filter(r => r.id === 'color-contrast')
                .reduce((n, r) => n + r.nodes.length, 0);
            return [contrast, result.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map(n => [n.target.join(' '), n.failureSummary])
            }))];
        } finally {
            document.body.style.height = height;
        }
    }""", selector)
    assert checked, f"axe checked no text's contrast in state {state}"
    for v in violations:
        print(f"axe [{state}] {v['impact']}: {v['id']} ({v['help']}) "
              f"{json.dumps(v['nodes'][:3])}")
    bad = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert not bad, f"axe in state {state}: {json.dumps(bad, indent=1)}"


def panel_clip(page) -> dict:
    """The panel from its title to its last card (the sidebar's empty rest left out)."""
    panel = page.locator(PANEL).bounding_box()
    cards = page.locator(".jp-HPCPanel-list").bounding_box()
    bottom = min(cards["y"] + cards["height"] + 8, panel["y"] + panel["height"])
    return {"x": panel["x"], "y": panel["y"], "width": panel["width"],
            "height": bottom - panel["y"]}


def partitions_in(page, hpc="gemini"):
    # (status answers from memory: the partitions come into the form once sinfo has answered)
    card(page, hpc).locator("[name=partition] option", has_text="debug (default)").first.wait_for(
        state="attached", timeout=LOAD)


# `lab` before `filled_node`: lab_server cancels every job when it starts.
def test_no_serious_axe_violation_in_any_state(browser, lab, artifacts, picture, filled_node):
    for path, content in DEMO_FILES.items():
        home_file(SANDBOX_USER, f"{DEMO}/{path}", content)
    page = open_panel(browser, lab)
    try:
        # Its tab clicked, the panel takes the focus (as JupyterLab's own panels do). (Where
        # the layout restorer opened it on load, nothing was clicked and the focus rightly
        # stayed where it was: its tab is clicked closed and open again.)
        if not page.evaluate("() => !!document.activeElement?.closest('.jp-HPCPanel')"):
            tab = page.get_by_role("tab", name="HPC")
            tab.click()
            page.locator(".jp-HPCPanel").wait_for(state="hidden", timeout=LOAD)
            tab.click()
        page.wait_for_function("() => document.activeElement?.closest('.jp-HPCPanel')",
                               timeout=10_000)
        wait_badge(page, "idle")
        wait_badge(page, "login", hpc="mfa")
        partitions_in(page)
        axe(page, PANEL, "idle")
        picture("panel-idle", page, panel_clip(page))

        # A refused value, with "More options" open: the partition's limit inline.
        gemini = card(page)
        gemini.locator("details.jp-HPCPanel-more summary").click()
        gemini.locator("input[name=workdir]").fill(f"~/{DEMO}")
        gemini.locator("input[name=time]").fill("13:00:00")
        gemini.get_by_text("exceeds partition debug's MaxTime 12:00:00").wait_for(timeout=10_000)
        axe(page, PANEL, "refused value")
        page.screenshot(path=artifacts / "a11y-refused.png")
        picture("panel-form", page, panel_clip(page))

        # Pending: another user's job holds the node.
        gemini.locator("input[name=time]").fill("00:30:00")
        gemini.locator("input[name=mem]").fill("1G")
        gemini.locator("details.jp-HPCPanel-more summary").click()  # (closed again)
        page.wait_for_function("() => !document.querySelector("
                               "'.jp-HPCPanel-card[data-hpc=gemini] .jp-HPCPanel-launch')"
                               ".disabled", timeout=10_000)  # (the form's check has run)
        gemini.get_by_role("button", name="Launch").click()
        wait_badge(page, "pending")
        gemini.locator(".jp-HPCPanel-reason", has_text="Resources").wait_for(timeout=60_000)
        gemini.locator(".jp-HPCPanel-estimate").wait_for(timeout=60_000)
        page.wait_for_function("() => !document.querySelector("
                               "'.jp-HPCPanel-card[data-hpc=gemini] .jp-HPCPanel-stop')"
                               ".disabled", timeout=60_000)  # (the launch has answered)
        axe(page, PANEL, "pending")
        page.screenshot(path=artifacts / "a11y-pending.png")
        picture("panel-pending", page, panel_clip(page))

        # Running, once the other job has gone.
        subprocess.run(["scancel", filled_node], check=True)
        gemini.get_by_role("button", name="Open VS Code").wait_for(timeout=LOAD)
        wait_badge(page, "running")
        axe(page, PANEL, "running")
        page.screenshot(path=artifacts / "a11y-running.png")
        picture("panel-running", page, panel_clip(page))

        with page.context.expect_page() as opened:
            gemini.get_by_role("button", name="Open VS Code").click()
        vscode = opened.value
        vscode.set_viewport_size({"width": 1100, "height": 660})
        # The folder of the form, its file opened in the editor.
        vscode.locator(".explorer-folders-view").get_by_text("train.py").click(timeout=LOAD)
        vscode.locator(".monaco-editor .view-lines", has_text="def main").wait_for(timeout=LOAD)
        if vscode.locator(".part.auxiliarybar").is_visible():
            vscode.keyboard.press("Control+Alt+B")  # (VS Code's chat side bar: not ours)
        picture("vscode", vscode)
        vscode.close()

        # The stop dialog.
        gemini.get_by_role("button", name="Stop").click()
        dialog = page.locator(DIALOG)
        dialog.get_by_text("also cancel the SLURM job").wait_for()
        axe(page, DIALOG, "stop dialog")
        page.screenshot(path=artifacts / "a11y-stop-dialog.png")
        dialog.get_by_role("button", name="Stop").click()
        wait_badge(page, "idle")
        assert slurm_jobs() == []

        # The login dialog of the cluster that asks for a password and a code.
        card(page, "mfa").get_by_role("button", name="Log in").click()
        dialog.locator(".jp-HPCLogin-field", has_text="Password:").wait_for(timeout=30_000)
        axe(page, DIALOG, "login dialog")
        page.screenshot(path=artifacts / "a11y-login-dialog.png")
        picture("login-dialog", dialog.locator(".jp-Dialog-content"))
        dialog.get_by_role("button", name="Cancel").click()
        wait_badge(page, "login", hpc="mfa")
    finally:
        page.close()
        shutil.rmtree(os.path.join(pwd.getpwnam(SANDBOX_USER).pw_dir, DEMO), ignore_errors=True)


def focused(page) -> str:
    return page.evaluate("() => { const a = document.activeElement;"
                         " return a ? a.outerHTML.slice(0, 160) : 'nothing' }")


def tab_to(page, selector: str, back: bool = False, limit: int = 40) -> None:
    """Press Tab (Shift+Tab) until the focus is on selector."""
    for _ in range(limit):
        if page.evaluate("(s) => !!document.activeElement?.matches(s)", selector):
            return
        page.keyboard.press("Shift+Tab" if back else "Tab")
    raise AssertionError(f"{selector} not reached in {limit} presses; focus on {focused(page)}")


def is_focused(page, selector: str) -> bool:
    return page.evaluate("(s) => !!document.activeElement?.matches(s)", selector)


def test_keyboard_only_launch_open_stop_and_login(browser, lab, artifacts):
    gemini = ".jp-HPCPanel-card[data-hpc=gemini]"
    mfa_card = ".jp-HPCPanel-card[data-hpc=mfa]"
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(f"{lab.url}lab?token={lab.token}")
        # JupyterLab's start-up ends with the Launcher in the main area holding the focus.
        page.wait_for_function("() => document.activeElement?.closest('.jp-Launcher')",
                               timeout=LOAD)
        # Into the panel by keyboard alone: Tab to the left side bar's tabs (JupyterLab puts
        # them in the tab order after its menu bar), the arrow keys to the HPC tab, Enter shows
        # the panel; the next Tab goes into it. (The command palette's "Show the HPC panel"
        # shows it too, but the palette gives the focus back to the main area when it closes.)
        tab_to(page, ".jp-SideBar.jp-mod-left .lm-TabBar-tab", limit=80)
        hpc_tab = ".jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id=jupyter-hpc-manager-panel]"
        for _ in range(10):
            if is_focused(page, hpc_tab):
                break
            page.keyboard.press("ArrowDown")
        assert is_focused(page, hpc_tab), focused(page)
        page.keyboard.press("Enter")
        page.locator(".jp-HPCPanel").wait_for()
        page.keyboard.press("Tab")
        assert page.evaluate("() => !!document.activeElement?.closest('.jp-HPCPanel')"), (
            focused(page))
        wait_badge(page, "idle")
        wait_badge(page, "login", hpc="mfa")

        # Launch: the memory field, then Launch.
        tab_to(page, f"{gemini} input[name=mem]")
        page.keyboard.press("Control+A")
        page.keyboard.type("1G")
        tab_to(page, f"{gemini} .jp-HPCPanel-launch")
        page.wait_for_function(f"() => !document.querySelector('{gemini} .jp-HPCPanel-launch')"
                               ".disabled", timeout=10_000)  # (the form's check has run)
        page.keyboard.press("Enter")
        wait_badge(page, "running")
        # The focus was not dropped with the Launch button: it is on Open VS Code.
        page.wait_for_function(f"() => document.activeElement?.matches('{gemini} "
                               ".jp-HPCPanel-open')", timeout=10_000)
        page.screenshot(path=artifacts / "keyboard-running.png")

        with page.context.expect_page() as opened:
            page.keyboard.press("Enter")
        vscode = opened.value
        vscode.locator(".monaco-workbench").wait_for(timeout=LOAD)
        assert f"{lab.base_url}hpc/gemini/code/" in vscode.url
        vscode.close()

        # Stop: the dialog's checkbox by Space (off, on again), its Stop button by Enter.
        tab_to(page, f"{gemini} .jp-HPCPanel-stop")
        page.keyboard.press("Enter")
        box = ".jp-Dialog .jp-HPCPanel-cancelJob input[type=checkbox]"
        page.locator(box).wait_for()
        tab_to(page, box)
        page.keyboard.press("Space")
        assert not page.locator(box).is_checked()
        page.keyboard.press("Space")
        assert page.locator(box).is_checked()
        page.screenshot(path=artifacts / "keyboard-stop-dialog.png")
        tab_to(page, ".jp-Dialog button.jp-mod-warn", back=True)
        page.keyboard.press("Enter")
        wait_badge(page, "idle")
        assert slurm_jobs() == []  # cancelled, as the checkbox said
        page.wait_for_function(f"() => document.activeElement?.closest('{gemini}')",
                               timeout=10_000)  # (the focus stays in the card)

        # Log in to mfa: the password, then a code, each typed and sent with Enter.
        tab_to(page, f"{mfa_card} .jp-HPCPanel-login")
        page.keyboard.press("Enter")
        password = ".jp-Dialog .jp-HPCLogin-field input"
        page.locator(".jp-Dialog .jp-HPCLogin-field", has_text="Password:").wait_for(
            timeout=30_000)
        tab_to(page, password)  # (the dialog puts the focus there itself)
        page.keyboard.type(mfa.password())
        page.keyboard.press("Enter")
        page.locator(".jp-Dialog .jp-HPCLogin-field", has_text="Verification code:").wait_for(
            timeout=30_000)
        tab_to(page, password)
        page.keyboard.type(mfa.fresh_code())
        page.keyboard.press("Enter")
        wait_badge(page, "idle", hpc="mfa")
        page.locator(f"{mfa_card} .jp-HPCPanel-launch").wait_for()
        page.screenshot(path=artifacts / "keyboard-logged-in.png")
    finally:
        page.close()
