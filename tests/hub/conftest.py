"""Tests through the sandbox's real JupyterHub (sandbox/hub-up.sh: `make hub-up`): Chromium logs
in with the Hub's own login form, as alice and as bob. Playwright's sync API, so this folder runs
in its own pytest invocation, like tests/browser. A Hub that is not up fails the tests."""

from __future__ import annotations

import pytest

from chromium import artifacts, browser, jp_asyncio_loop, jp_server_cleanup  # noqa: F401
from hubtools import SANDBOX, hub_api


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
