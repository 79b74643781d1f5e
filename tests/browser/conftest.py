"""Browser tests run Playwright's sync API in their own pytest run (see chromium.py).

With HPC_PICTURES set to a folder (`make pictures` sets docs/images), the tests that take the
README's pictures save them there too, cropped to what they show."""

from __future__ import annotations

import os

import pytest

from chromium import ROOT, artifacts, browser, jp_asyncio_loop, jp_server_cleanup  # noqa: F401


@pytest.fixture
def picture():
    """picture(name, target[, clip]): a PNG of a Locator (cropped to it) or a Page (its viewport,
    or the clip) as HPC_PICTURES/name.png; nothing without HPC_PICTURES."""
    folder = os.environ.get("HPC_PICTURES")

    def take(name: str, target, clip: dict | None = None) -> None:
        if not folder:
            return
        path = ROOT / folder / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if clip is not None:
            target.screenshot(path=path, clip=clip)
        else:
            target.screenshot(path=path)

    return take
