"""Headless Chromium for the report tests: found once, started with the same flags everywhere.

The flags are the ones the project runs Chromium with (no sandbox, GPU, first-run page,
background networking, component updates or sync), plus a fixed device scale and no
scrollbars so screenshot pixels match the page's CSS pixels.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]


def chromium() -> str:
    """The Chromium executable; a skip when it is missing (a failure under ``CI=true``)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
    if not os.path.exists(path):
        message = "headless Chromium is not installed (apt-get install chromium)"
        pytest.fail(message) if os.environ.get("CI") == "true" else pytest.skip(message)
    return path


def run_chromium(exe: str, args: list[str], home: Path) -> str:
    """Run ``exe`` headless with ``args`` and a fresh profile under ``home``; its stdout."""
    env = {**os.environ, "HOME": str(home)}  # nothing shared with other runs
    done = subprocess.run(
        [exe, *CHROMIUM_FLAGS, *args], capture_output=True, text=True, timeout=120, env=env, check=True
    )
    return done.stdout
