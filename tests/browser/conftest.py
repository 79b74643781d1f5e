"""Browser tests run Playwright's sync API in their own pytest run (see chromium.py)."""

from chromium import artifacts, browser, jp_asyncio_loop, jp_server_cleanup  # noqa: F401
