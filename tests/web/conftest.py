"""Browser tests: Playwright driving Debian's Chromium (installed by run.sh, never downloaded by Playwright)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
ROOT = Path(__file__).resolve().parent.parent.parent
OUTPUT = ROOT / "test-output"
"""Screenshots and other artefacts of the browser tests (ignored by git)."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per test module (the sync API keeps its own event loop; do not hold it across modules)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `./run.sh test` installs Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
