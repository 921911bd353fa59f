"""A real headless Chromium (Debian's package), driven by Playwright without any browser download."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make test installs Debian's package where it can)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


DOCS_DIR = Path(__file__).resolve().parents[2] / "docs"


def update_docs_screenshot(source: Path, name: str) -> None:
    """Refresh a README screenshot, only when asked (`make screenshots`): a test run must not
    change the repository's files."""
    if os.environ.get("BOOKGATE_UPDATE_SCREENSHOTS"):
        shutil.copyfile(source, DOCS_DIR / name)
