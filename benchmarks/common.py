"""Shared helpers for the benchmarks: interleaved timing, peak memory, result rows, the machine, saving.

Every benchmark measures medimg and its named baseline in the same process (or the
same parent process), alternating them so background load hits both alike, and
reports the median. Peak memory is the peak resident set size of the process (and
of its children, for subprocess benchmarks) sampled while the measured call runs.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), in bytes; 0 if unknown."""
    try:
        with open(f"/proc/{pid or 'self'}/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            kids = [int(c) for c in fh.read().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in _children(k)]


class PeakMemory:
    """Sample the peak RSS (this process plus its children) while a block runs.

    Example:
        >>> with PeakMemory() as peak:
        ...     buf = bytearray(50 * 2**20)
        >>> peak.mib > 40
        True
    """

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self.samples = 0  # readings taken by the sampler thread so far
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        me = os.getpid()
        while True:
            total = rss_bytes(me) + sum(rss_bytes(c) for c in _children(me))
            self.peak = max(self.peak, total)
            self.samples += 1
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> PeakMemory:
        self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def mib(self) -> float:
        return self.peak / 2**20


def interleaved(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, dict[str, Any]]:
    """Run each function ``repeat`` times, alternating them; median seconds, peak MiB, last output.

    Example:
        >>> r = interleaved({"a": lambda: 1, "b": lambda: 2}, repeat=3)
        >>> sorted(r), r["b"]["out"], len(r["a"]["times"])
        (['a', 'b'], 2, 3)
    """
    res: dict[str, dict[str, Any]] = {k: {"times": [], "peak_mib": 0.0, "out": None} for k in fns}
    for i in range(repeat):
        order = list(fns) if i % 2 == 0 else list(fns)[::-1]  # neither always goes first
        for name in order:
            with PeakMemory() as peak:
                t0 = time.perf_counter()
                out = fns[name]()
                dt = time.perf_counter() - t0
            r = res[name]
            r["times"].append(dt)
            r["peak_mib"] = max(r["peak_mib"], peak.mib)
            r["out"] = out
    for r in res.values():
        r["median_s"] = statistics.median(r["times"])
    return res


def row(
    benchmark: str,
    task: str,
    unit: str,
    medimg: float,
    baseline_name: str,
    baseline: float,
    higher_is_better: bool = False,
    goal: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One result row; ``ratio`` is always "times better than the baseline" (> 1: medimg wins).

    Example:
        >>> row("x", "task", "s", 1.0, "plain", 3.0)["ratio"]
        3.0
    """
    ratio = (
        (medimg / baseline if higher_is_better else baseline / medimg)
        if medimg and baseline
        else float("nan")
    )
    out = {
        "benchmark": benchmark,
        "task": task,
        "unit": unit,
        "medimg": medimg,
        "baseline_name": baseline_name,
        "baseline": baseline,
        "ratio": ratio,
        "goal": goal,
        "goal_met": None if goal is None else bool(ratio >= goal),
    }
    out.update(extra)
    return out


def machine() -> dict[str, Any]:
    """CPU model, core count, memory, torch/monai versions: what a table needs to be read."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    try:
        with open("/proc/meminfo") as fh:
            info["mem_gib"] = round(int(fh.readline().split()[1]) / 2**20, 1)
        info["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        import monai
        import torch

        info.update(torch=torch.__version__, monai=monai.__version__, torch_threads=torch.get_num_threads())
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover
        pass
    return info


def save_result(name: str, result: dict[str, Any]) -> Path:
    """Write ``result`` to ``benchmarks/results/<name>-<UTC time>.json`` (git-ignored), atomically."""
    import datetime

    from medimg.io.atomic import atomic_write_text

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    path = Path(__file__).resolve().parent / "results" / f"{name}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2))
    return path


def one_epoch_workflow(
    source: str, name: str, task: str, data: dict[str, Any], preprocessing: dict[str, Any], **sections: Any
) -> Any:
    """A parsed study workflow as the benchmarks run it: seed 0, RAS, one epoch on one CPU device.

    ``data`` and ``preprocessing`` add to (or replace) those defaults; ``sections`` are the other
    top-level sections (``model``, ``optim``, ``augmentation``...); ``source`` names the benchmark in
    the errors of an invalid workflow.

    Example:
        >>> wf = one_epoch_workflow(  # doctest: +SKIP
        ...     "bench", "cls", "classification", {"manifest": "m.csv", "label_column": "y"}, {"spacing": None}
        ... )
    """
    from medimg.config.load import parse_workflow

    doc = {
        "name": name,
        "task": task,
        "seed": 0,
        "data": data,
        "preprocessing": {"orientation": "RAS", **preprocessing},
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1},
        **sections,
    }
    return parse_workflow(doc, source=source)
