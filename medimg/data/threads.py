"""Thread plan for training on the CPU: who gets the cores, augmentation or the network.

On a machine with few cores the random half of the pipeline (flips, crops, intensity) and
torch's intra-op threads compete for the same cores. MONAI's ``ThreadDataLoader`` prepares the
next batch in a background thread *while* the network steps; with two cores that thread takes
a core from one of torch's two OpenMP threads in the middle of a parallel region, and the
region waits for its slowest thread. ``benchmarks/profile_cls_step.py`` measures it on
DenseNet121 at 64^3 (``docs/benchmarks.md``, "Against the cached script"). The plan:

* fewer than :data:`PREFETCH_MIN_CORES` usable cores (CPU training): no background thread;
  the batch is prepared in the training thread between steps and torch keeps every core;
* more cores: the background thread prefetches, and torch gets one core fewer;
* a GPU runs the network: prefetch in a thread, torch's CPU threads untouched;
* ``trainer.num_workers > 0``: worker processes as the workflow asks, threads untouched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

PREFETCH_MIN_CORES = 4  # below this the augmentation thread costs the network more than it hides


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
            cores,
            f"{cores} cores < {PREFETCH_MIN_CORES}: the batch is prepared between steps, "
            "not in a thread that would take a core from the network mid-step",
        )
    return ThreadPlan(cores, True, cores - 1, "one core prepares the next batch while the network runs")
