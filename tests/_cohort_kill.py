"""The SIGKILL harness the cohort tests share: a worker script killed after k cases, run again, and
the check that each case was computed, and recorded done, exactly once.

A worker (``root/worker.py``, written by the test) runs a cohort into ``root/out`` and appends one
line ``<case> <pid>`` to ``root/computations.log`` (fsync'd) for every case it computes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from medimg.inference.ledger import Ledger

ROOT = Path(__file__).resolve().parents[1]


def start(root: Path, threads: int | None = 1) -> subprocess.Popen:
    """``root/worker.py root`` in a new process (``threads``: its ``OMP_NUM_THREADS``; None leaves it)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.Popen([sys.executable, str(root / "worker.py"), str(root)], env=env)


def record_computation(root: Path, case: str) -> None:
    """Append ``<case> <pid>`` to ``root/computations.log``, fsync'd (called by the worker scripts)."""
    fd = os.open(root / "computations.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{case} {os.getpid()}\n".encode())
    os.fsync(fd)
    os.close(fd)


def log_calls(root: Path, module: object, name: str, case_of, delay: float = 0.0) -> None:
    """Replace ``module.name`` by a wrapper that records the case (``case_of(*args)``) before each call.

    ``delay`` seconds after recording: slow enough to be killed between cases and inside one.
    """
    real = getattr(module, name)

    def logged(*args, **kwargs):
        record_computation(root, case_of(*args, **kwargs))
        if delay:
            time.sleep(delay)
        return real(*args, **kwargs)

    setattr(module, name, logged)


def run_cohort_and_exit(root: Path, predict_cohort) -> None:
    """The worker's cohort: ``predict_cohort(root/model, CohortRun(input cases, root/out))``; its exit
    code is the process's."""
    from medimg.inference.request import CohortRun

    report = predict_cohort(root / "model", CohortRun(input_cases(root), root / "out"))
    sys.exit(report.exit_code)


def input_cases(root: Path) -> list:
    """The worker's cases: every ``root/in/*.nii.gz``, keyed by its name (called by the worker scripts)."""
    from medimg.inference.cases import CaseInput

    return [CaseInput(p.name.split(".")[0], (p,)) for p in sorted((root / "in").glob("*.nii.gz"))]


def done_cases(out: Path) -> set[str]:
    """The cases the ledger in ``out`` records as done."""
    if not out.exists():
        return set()
    return {e["case_id"] for e in Ledger(out).latest().values() if e["status"] == "done"}


def kill_when_done(root: Path, k: int, timeout: float = 240.0, threads: int | None = 1) -> set[str]:
    """Start the worker, SIGKILL it once ``k`` cases are done; the cases done then."""
    proc = start(root, threads)
    deadline = time.monotonic() + timeout
    while len(done_cases(root / "out")) < k:
        assert proc.poll() is None, "the worker ended before it could be killed"
        assert time.monotonic() < deadline, "the worker made no progress"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return done_cases(root / "out")


def assert_each_case_once(root: Path, names: set[str], done_at_kills: list[set[str]], runs: int = 3) -> None:
    """Every case in ``names`` computed, none twice within a run, none again after it was recorded
    done at a kill (``done_at_kills``: the done sets after each kill), each recorded done once."""
    lines = [tuple(line.split()) for line in (root / "computations.log").read_text().splitlines()]
    pids = list(dict.fromkeys(pid for _, pid in lines))
    by_run = [[case for case, pid in lines if pid == p] for p in pids]
    assert len(by_run) == runs
    for computed in by_run:
        assert len(computed) == len(set(computed)), "a case was computed twice within one run"
    for i, done in enumerate(done_at_kills):
        assert not {c for computed in by_run[i + 1 :] for c in computed} & done, "a done case was redone"
    counts = Counter(case for case, _ in lines)
    assert set(counts) == names
    assert all(counts[c] == 1 for c in done_at_kills[0])  # done before the first kill: computed once
    done_entries = Counter(e["case_id"] for e in Ledger(root / "out").entries() if e["status"] == "done")
    assert done_entries == Counter(dict.fromkeys(names, 1))  # each case recorded done exactly once
    assert done_cases(root / "out") == names
