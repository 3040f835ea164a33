"""Which recipe levers move the planned Hippocampus study on a short CPU budget: patch, batch, rate, spatial augmentation.

After the width change (``benchmarks/sweep_seg_width.py``) the planned study's validation Dice
flattened near 0.85 within about five of its ten minutes. This sweep asks which of the settings a
user would reach for next lifts that plateau: it plans the study as ``medimg plan --budget B``
does (``B`` = 10 minutes by default), then trains the plan and one variant per lever (shared
machinery: :mod:`benchmarks.seg_sweep`):

* ``batch_2``: ``optim.batch_size`` 2;
* ``patch_40x56x40``: the patch rounded up to the strides, 40x56x40, with the batch of 2 the plan
  gave it (the plan before a short CPU budget rounded the patch down);
* ``batch_4``: ``optim.batch_size`` 4;
* ``lr_1e-3``: ``optim.lr`` 1e-3 instead of the plan's 3e-3;
* ``spatial_0.2``: random rotation and scaling (``augmentation.spatial.prob``) on 20 % of the
  patches, nnU-Net's rate, which the plan leaves off on a short CPU budget.

The plan's own run is also scored on the validation cases with and without flip TTA (the image
and its three axis flips), its postprocessing on and off.

A variant whose value the plan already has trains the plan again (a second sample of it). Each is
judged on the **validation** split fixed before tuning (the last validation Dice of the run); the
test split is scored by ``medimg run`` as always and kept for the record, never to choose. Run one
at a time on a quiet machine: the budget is wall clock, so a busy CPU buys fewer steps.

Data: the prepared Hippocampus cache (``python -m benchmarks.bench_study_real prepare``).
Run: ``python -m benchmarks.sweep_seg_recipe run --budget 10m --out docs/results/`` (about
70 minutes on 2 cores); ``collect NAME=RUN_DIR...`` re-reads finished ``medimg run`` folders.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from benchmarks.seg_sweep import Variants, sweep_main

BATCH, PATCH = r"(\n  batch_size: )([0-9]+)", r"(\n  patch_size: )(\[[0-9, ]+\])"


def _setting(*changes: tuple[str, str, str]) -> Callable[[str], str]:
    """An edit of the planned YAML text: each ``(pattern, value, key)`` sets the value of group 2."""

    def edit(text: str) -> str:
        for pattern, value, key in changes:
            text, n = re.subn(pattern, rf"\g<1>{value}", text, count=1, flags=re.DOTALL)
            if n != 1:
                raise SystemExit(f"the planned workflow has no {key}: is it a segmentation plan?")
        return text

    return edit


VARIANTS: Variants = {
    "planned": None,
    "batch_2": _setting((BATCH, "2", "optim.batch_size")),
    "patch_40x56x40": _setting(
        (PATCH, "[40, 56, 40]", "augmentation.patch_size"), (BATCH, "2", "optim.batch_size")
    ),
    "batch_4": _setting((BATCH, "4", "optim.batch_size")),
    "lr_1e-3": _setting((r"(\n  lr: )([0-9.e-]+)", "0.001", "optim.lr")),
    "spatial_0.2": _setting(
        (r"(\n  spatial:[^\n]*\n    prob: )([0-9.]+)", "0.2", "augmentation.spatial.prob")
    ),
}


def main(argv: list[str] | None = None) -> int:
    return sweep_main(argv, __doc__ or "", VARIANTS, "seg_recipe", tta_of="planned")


if __name__ == "__main__":
    raise SystemExit(main())
