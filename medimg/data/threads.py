"""Thread plan for training on the CPU: who gets the cores, augmentation or the network.

On a machine with few cores the random half of the pipeline (flips, crops, intensity) and
torch's intra-op threads compete for the same cores. MONAI's ``ThreadDataLoader`` prepares the
next batch in a background thread *while* the network steps; with two cores that thread takes
a core from one of torch's two OpenMP threads in the middle of a parallel region, and the
region waits for its slowest thread: that was the suspicion of issue 24, and
``benchmarks/bench_train_cached.py`` times both choices (``docs/benchmarks.md``). The plan:

* CPU training on fewer than :data:`PREFETCH_MIN_CORES` cores: no background thread; the batch
  is prepared between steps (``make_loader(prefetch=False)``) and torch keeps its two threads.
  Preparing a batch is a small part of a step, but the thread doing it beside the step holds
  the GIL the network's Python needs and a core its OpenMP threads wait for: with the step timed
  whole (the batch's fetch included), DenseNet121's step took 2.51 s with the thread and 2.19 s
  without in one run, 2.18 s and 2.10 s in the next; the UNet's 1.23 s with and 1.40 s without
  (``train_cached``, ``docs/benchmarks.md``): the rule follows the majority, within the noise;
* CPU training on more cores: the background thread prefetches, torch keeps its thread count;
* a GPU runs the network: prefetch in a thread, torch's CPU threads untouched;
* ``trainer.num_workers > 0``: worker processes as the workflow asks, threads untouched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

PREFETCH_MIN_CORES = 4  # below this the reason names the 2-core measurement


@dataclass(frozen=True)
class ThreadPlan:
    """How a training run uses the CPU cores."""

    cores: int
    prefetch: bool  # the next batch is prepared in a background thread (ThreadDataLoader)
    torch_threads: int | None  # torch.set_num_threads; None: leave torch's own choice
    reason: str

    def explain(self) -> str:
        """One line for the plan's log.

        Example:
            >>> ThreadPlan(2, False, 2, "2 cores").explain()
            'threads: prefetch off, torch 2 of 2 cores (2 cores)'
        """
        torch = "torch's default" if self.torch_threads is None else str(self.torch_threads)
        return f"threads: prefetch {'on' if self.prefetch else 'off'}, torch {torch} of {self.cores} cores ({self.reason})"

    def apply(self) -> None:
        """Set torch's intra-op threads as planned (a no-op when the plan leaves them)."""
        if self.torch_threads is not None:
            import torch

            torch.set_num_threads(self.torch_threads)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which a container or ``taskset`` limits).

    Example:
        >>> usable_cores() >= 1
        True
    """
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def plan_threads(wf: Any, device: str = "cpu", cores: int | None = None) -> ThreadPlan:
    """The thread plan for training ``wf`` with the network on ``device``.

    Example:
        >>> plan_threads(wf, "cpu", cores=2).prefetch  # doctest: +SKIP
        False
    """
    cores = cores or usable_cores()
    if wf.trainer.num_workers > 0:
        return ThreadPlan(
            cores, True, None, f"trainer.num_workers={wf.trainer.num_workers}: worker processes"
        )
    if not device.startswith("cpu"):
        return ThreadPlan(
            cores, True, None, f"the network runs on {device}: augmentation overlaps it in a thread"
        )
    if cores < PREFETCH_MIN_CORES:
        return ThreadPlan(
            cores,
            False,
            None,
            f"{cores} cores: the batch is prepared between steps, no thread beside torch's (measured "
            "faster on 2 cores with the fetch timed: docs/benchmarks.md, train_cached)",
        )
    return ThreadPlan(cores, True, None, "the next batch is prepared in a thread while the network runs")


def cache_fill_threads(requested: int, cores: int | None = None) -> int | None:
    """Threads that fill the memory cache: ``preprocessing.cache.num_workers`` when set, else planned.

    On fewer than :data:`PREFETCH_MIN_CORES` cores one thread: on 2 cores MONAI's default (a
    thread per core) filled 600 small NIfTI cases in 3.2-3.3 s against 2.3 s with one, the
    threads and torch's own contending for the GIL and the cores
    (``benchmarks/profile_startup.py``, ``docs/benchmarks.md``). On more cores MONAI's default
    (``None``: one per core).

    Example:
        >>> cache_fill_threads(0, cores=2), cache_fill_threads(3, cores=2), cache_fill_threads(0, cores=16)
        (1, 3, None)
    """
    if requested > 0:
        return requested
    cores = cores or usable_cores()
    return 1 if cores < PREFETCH_MIN_CORES else None
