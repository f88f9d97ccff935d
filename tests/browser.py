"""Looking at a page as a person does: Debian's `chromium` (installed by .ci/run), driven headless through
Playwright's Python package with that executable (Playwright's own browser download is never needed)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium")
# Skipped on a machine without it; in CI (.ci/run installs it) a missing browser fails the tests instead.
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="Debian's chromium is not installed (.ci/run installs it)"
)


@dataclass
class Seen:
    text: str  # the page's visible text
    images: list[dict]  # each <img>: alt, loaded (decoded, with a width), width, height
    tables: list[list[list[str]]]  # each <table>'s rows of cell texts, whitespace as written
    requests: list[str]  # every URL the page asked for beyond the file itself (all refused)


def look_at(page: Path, screenshot: Path) -> Seen:
    """Open `page` from disk with the network refused, wait until it has loaded, save a full-page screenshot."""
    from playwright.sync_api import sync_playwright

    requests: list[str] = []

    def refuse(route):
        if route.request.url != page.as_uri():
            requests.append(route.request.url)
            return route.abort()
        return route.continue_()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            tab.route("**/*", refuse)
            tab.goto(page.as_uri(), wait_until="load")
            images = tab.evaluate(
                """[...document.images].map(image => ({alt: image.alt, width: image.naturalWidth,
                   height: image.naturalHeight, loaded: image.complete && image.naturalWidth > 0}))"""
            )
            tables = tab.evaluate(
                "[...document.querySelectorAll('table')].map(table => [...table.rows].map(row => "
                "[...row.cells].map(cell => cell.textContent)))"
            )
            text = tab.inner_text("body")
            tab.screenshot(path=screenshot, full_page=True)
        finally:
            browser.close()
    return Seen(text, images, tables, requests)
