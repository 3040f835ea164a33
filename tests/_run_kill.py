"""Killing a training run mid-way: ``medimg run`` started, SIGKILLed once its checkpoint shows enough.

The resume tests (reproduction, the time budget) share it: they then run the same workflow with
``--resume`` and compare.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def kill_at_checkpoint(
    cmd: Sequence[str],
    cwd: Path,
    env: dict[str, str],
    ckpt: Path,
    reached: Callable[[Path], bool],
    missing: str,
    timeout: float = 300,
) -> None:
    """Run ``cmd``; SIGKILL it as soon as ``reached(ckpt)`` holds for a newly written ``ckpt``.

    Fails with ``missing`` when no such checkpoint appears within ``timeout`` seconds, or when the
    run ends before it could be killed.
    """
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, seen = time.monotonic() + timeout, 0.0
        while time.monotonic() < deadline:
            assert proc.poll() is None, "training finished before it could be killed"
            if ckpt.exists() and ckpt.stat().st_mtime != seen:
                seen = ckpt.stat().st_mtime
                if reached(ckpt):
                    return
            time.sleep(0.05)
        raise AssertionError(missing)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
