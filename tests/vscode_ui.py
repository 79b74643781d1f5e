"""Driving VS Code's workbench in Chromium (browser and Hub tests): open a Markdown file from the
Explorer and its preview, which VS Code renders in a webview (an iframe of its own origin)."""

from __future__ import annotations


def markdown_preview(page, name: str, timeout: float = 60_000):
    """Open `name` from the Explorer, then its preview; the preview's document (a frame)."""
    page.get_by_text(name).first.click()
    page.locator(".tab", has_text=name).first.wait_for(timeout=timeout)
    # The editor's own title button (a keyboard shortcut pressed before the Markdown extension
    # has registered it is lost).
    page.get_by_role("button", name="Open Preview to the Side").first.click(timeout=timeout)
    return page.frame_locator("iframe.webview").frame_locator("iframe#active-frame")
