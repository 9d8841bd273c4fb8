"""Headless Chromium for the Prism tests: Debian's /usr/bin/chromium driven by Playwright.

Browser downloads are impossible here, so Playwright gets ``executable_path``; every run
gets a fresh profile.  Without Chromium the tests skip on a developer's machine and fail
on CI (``CI`` set), where ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

__all__ = ["CHROMIUM", "FLAGS", "chromium"]

CHROMIUM = os.environ.get("COSMO_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@contextmanager
def chromium(width: int = 1500, height: int = 900) -> Iterator[object]:
    """A Playwright BrowserContext on a fresh user-data-dir (typed loosely: playwright is a test extra)."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    profile = tempfile.mkdtemp(prefix="prism-chromium-")
    try:
        with sync_api.sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, args=FLAGS, headless=True,
                viewport={"width": width, "height": height}, accept_downloads=True,
            )  # fmt: skip
            try:
                yield ctx
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
