"""Typing in one card while the panel is busy elsewhere (Chromium, the sandbox): gemini's CPUs
field is typed in key by key while apollo's card launches and while the panel's periodic poll
lands. Every keystroke stays, the field keeps the focus and the open "More options" stays open.
(The sidebar once re-made a card on each answer: the field lost the focus and the keys typed
after it went nowhere.)"""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from test_sidebar import LOAD, card, lab_server, open_panel, wait_badge

# The shortest polls the settings allow, so that answers land while the test types.
POLL = {"pollSeconds": 5, "pendingPollSeconds": 2}
KEYS = "1234567890"
MAX_KEYS = 400  # far more than the launch and two polls need; a stuck panel fails, not hangs


@pytest.fixture
def lab(sandbox_cluster, tmp_path, request):
    yield from lab_server(tmp_path, request, {
        name: dict(sandbox_cluster, job_name=f"ui-typing-{name}") for name in ("gemini", "apollo")
    }, lab_settings=POLL)


def test_typing_survives_another_cards_launch_and_the_poll(browser, lab, artifacts):
    page = open_panel(browser, lab)
    try:
        # JupyterLab's start-up ends by opening the Launcher in the (empty) main area, which
        # takes the focus: typing starts after that, as a user's would.
        page.wait_for_function(
            "() => document.activeElement?.closest('.jp-Launcher')", timeout=LOAD)
        wait_badge(page, "idle")
        wait_badge(page, "idle", hpc="apollo")
        for hpc in ("gemini", "apollo"):  # (the partitions come once sinfo has answered)
            card(page, hpc).locator("[name=partition] option", has_text="debug (default)"
                                    ).first.wait_for(state="attached", timeout=LOAD)
        apollo = card(page, "apollo")
        apollo.locator("input[name=mem]").fill("1G")
        launch = apollo.get_by_role("button", name="Launch")
        page.wait_for_function("(b) => !b.disabled", arg=launch.element_handle(),
                               timeout=10_000)  # (the form's check has run)

        more = card(page).locator("details.jp-HPCPanel-more")
        more.locator("summary").click()
        assert more.evaluate("d => d.open")
        field = card(page).locator("input[name=cpus]")
        field.click()
        page.keyboard.press("Control+A")
        page.keyboard.press("Backspace")
        assert field.input_value() == ""

        polls: list[str] = []
        page.on("response", lambda r: polls.append(r.url)
                if urlparse(r.url).path.endswith("/api/hpc/cluster-status") else None)

        # apollo's Launch, clicked without taking the focus from the field (a click event
        # only, as a script or a second pointer would): its card goes through submitted,
        # pending and running while gemini's field is typed in.
        launch.dispatch_event("click")
        typed = ""
        polls_when_running: int | None = None
        while True:
            key = KEYS[len(typed) % len(KEYS)]
            page.keyboard.type(key)
            typed += key
            page.wait_for_timeout(150)
            assert field.evaluate("f => document.activeElement === f"), (
                f"the field lost the focus after {len(typed)} keys: "
                + page.evaluate("() => document.activeElement?.outerHTML.slice(0, 300)"))
            assert field.input_value() == typed
            assert more.evaluate("d => d.open"), "More options closed by itself"
            if polls_when_running is None and apollo.locator(
                    ".jp-HPCPanel-badge").text_content() == "running":
                polls_when_running = len(polls)
            # Done once apollo runs and two of the panel's own polls have landed since.
            if polls_when_running is not None and len(polls) >= polls_when_running + 2:
                break
            assert len(typed) < MAX_KEYS, (
                f"after {len(typed)} keys: apollo "
                f"{apollo.locator('.jp-HPCPanel-badge').text_content()}, {len(polls)} polls")
        page.screenshot(path=artifacts / "typing-while-apollo-launched.png")
        assert apollo.get_by_role("button", name="Open VS Code").is_visible()
        assert card(page).locator(".jp-HPCPanel-badge").text_content() == "idle"
    finally:
        page.close()
