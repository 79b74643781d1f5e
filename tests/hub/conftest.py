"""Tests through the sandbox's real JupyterHub (sandbox/hub-up.sh: `make hub-up`): Chromium logs
in with the Hub's own login form, as alice and as bob. Playwright's sync API, so this folder runs
in its own pytest invocation, like tests/browser. A Hub that is not up fails the tests."""

from __future__ import annotations

import pathlib

import pytest

from hubtools import ROOT, SANDBOX, hub_api

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic", "--disable-dev-shm-usage"]


@pytest.fixture
def jp_asyncio_loop():
    yield None


@pytest.fixture
def jp_server_cleanup():
    yield


@pytest.fixture(scope="session")
def hub() -> dict[str, str]:
    """The users and their passwords; fails (never skips) when the Hub is not up."""
    try:
        code, _ = hub_api("GET", "")
    except OSError as exc:
        pytest.fail(f"the sandbox JupyterHub is not up ({exc}): run `make hub-up`")
    assert code == 200
    return dict(line.split(":", 1) for line in
                (SANDBOX / "hub-passwords").read_text().split())


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not pathlib.Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed: run sandbox/install.sh (make test does)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def artifacts() -> pathlib.Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
