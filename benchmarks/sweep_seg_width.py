"""How wide the planned DynUNet should be on a short CPU budget, and whether flip TTA pays: MSD Hippocampus.

The plan's segmentation network is nnU-Net's DynUNet; on a CPU its width decides how many steps a
budget buys. This sweep plans the study as ``medimg plan --budget B`` does (``B`` = 10 minutes by
default, half the issue's 20-minute budget), then trains two workflows that differ only in the
filters: the plan's (from 8 on a short CPU budget) and twice as wide (from 16, the rule before).
Both are judged on the **validation** split the benchmark fixed before tuning
(:func:`benchmarks.bench_explain.fixed_split`); the test split is scored by ``medimg run`` as
always and printed for the record, never to choose. For the narrower model it also scores the
validation cases with and without flip TTA (the image and its three axis flips), and with and
without the postprocessing chosen on validation.

Data: the prepared Hippocampus cache (``python -m benchmarks.bench_study_real prepare``).
Run: ``python -m benchmarks.sweep_seg_width run --budget 10m --out docs/results/`` (about 25 minutes
on 2 cores); ``collect planned=RUN_DIR double_width=RUN_DIR`` re-reads finished ``medimg run`` folders.
"""

from __future__ import annotations

import re

from benchmarks.seg_sweep import Variants, sweep_main


def double_width(text: str) -> str:
    """The planned workflow's DynUNet with every level twice as wide (the rule before: from 16)."""
    found = re.search(r"filters: \[([0-9, ]+)\]", text)
    if found is None:
        raise SystemExit("the planned workflow names no DynUNet filters: is it a segmentation plan?")
    filters = [int(v) for v in found.group(1).split(",")]
    return text.replace(f"filters: {filters}", f"filters: {[2 * f for f in filters]}")


VARIANTS: Variants = {"planned": None, "double_width": double_width}


def main(argv: list[str] | None = None) -> int:
    return sweep_main(argv, __doc__ or "", VARIANTS, "seg_width", tta_of="planned")


if __name__ == "__main__":
    raise SystemExit(main())
