"""Does a wider or residual DynUNet lift the planned Hippocampus study at the issue's 20-minute CPU budget?

At 10 minutes the plan's narrow DynUNet (filters from 8) beat the one twice as wide
(``benchmarks/sweep_seg_width.py``), and no setting of batch, rate or augmentation lifted its
validation plateau (``benchmarks/sweep_seg_recipe.py``). At 20 minutes the plateau stays, so this
sweep asks whether capacity lifts it once the budget buys enough steps. It plans the study as
``medimg plan --budget B`` does (``B`` = 20 minutes by default), then trains the plan and:

* ``width_16_batch_2``: every DynUNet level twice as wide (from 16), with a batch of 2 (a step of
  the wider network on 2 patches costs about what the plan's step on 4 does);
* ``width_16_batch_2_res``: the same with residual blocks (``res_block``, as in nnU-Net's
  residual-encoder variants).

Each is judged on the **validation** split fixed before tuning: the last validation Dice of the
run, and its validation cases scored as ``medimg predict`` scores them (with and without flip TTA
and the postprocessing chosen on validation); the mean of all the runs' probabilities (an ensemble,
three times the budget) is scored too, to show how far capacity can lift this split at all. The
test Dice ``medimg run`` scores is kept for the record, never to choose. Run one at a
time on a quiet machine: the budget is wall clock, so a busy CPU buys fewer steps.

Data: the prepared Hippocampus cache (``python -m benchmarks.bench_study_real prepare``).
Run: ``python -m benchmarks.sweep_seg_capacity run --out docs/results/`` (about 65 minutes on 2
cores); ``collect NAME=RUN_DIR...`` re-reads finished ``medimg run`` folders.
"""

from __future__ import annotations

from benchmarks.seg_sweep import Variants, sweep_main
from benchmarks.sweep_seg_recipe import BATCH, _setting
from benchmarks.sweep_seg_width import double_width

RESIDUAL = (
    r"(\n    deep_supervision: )(true|false)",
    r"\g<2>\n    res_block: true",
    "model.params.deep_supervision",
)


def wide(text: str) -> str:
    """The plan with every DynUNet level twice as wide and a batch of 2."""
    return _setting((BATCH, "2", "optim.batch_size"))(double_width(text))


def wide_residual(text: str) -> str:
    """:func:`wide` with DynUNet's residual blocks."""
    return _setting(RESIDUAL)(wide(text))


VARIANTS: Variants = {"planned": None, "width_16_batch_2": wide, "width_16_batch_2_res": wide_residual}


def main(argv: list[str] | None = None) -> int:
    return sweep_main(argv, __doc__ or "", VARIANTS, "seg_capacity", default_budget="20m", ensemble=True)


if __name__ == "__main__":
    raise SystemExit(main())
