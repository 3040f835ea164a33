"""Which recipe levers move the planned Hippocampus study on a short CPU budget: batch, rate, spatial augmentation.

After the width change (``benchmarks/sweep_seg_width.py``) the planned study's validation Dice
flattens near 0.85 within about five of its ten minutes. This sweep asks whether any of the
settings a user would reach for next lifts that plateau: it plans the study as
``medimg plan --budget B`` does (``B`` = 10 minutes by default), then trains the plan and one
variant per lever, each differing from the plan in one key only:

* ``batch_4``: ``optim.batch_size`` 4 instead of the plan's 2 (fewer, less noisy steps);
* ``lr_1e-3``: ``optim.lr`` 1e-3 instead of 3e-3;
* ``spatial_0.2``: random rotation and scaling (``augmentation.spatial.prob``) on 20 % of the
  patches, nnU-Net's rate, which the plan leaves off on a short CPU budget.

Each is judged on the **validation** split fixed before tuning (the last validation Dice of the
run); the test split is scored by ``medimg run`` as always and kept for the record, never to choose.
Run one at a time on a quiet machine: the budget is wall clock, so a busy CPU buys fewer steps.

Data: the prepared Hippocampus cache (``python -m benchmarks.bench_study_real prepare``).
Run: ``python -m benchmarks.sweep_seg_recipe run --budget 10m --out docs/results/`` (about
45 minutes on 2 cores); ``collect NAME=RUN_DIR...`` re-reads finished ``medimg run`` folders
(the plan first).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.bench_study_real import (
    HIPPO,
    WORK,
    hippocampus_manifest,
    not_prepared,
    parse_budget,
    run_medimg,
)
from benchmarks.sweep_seg_width import collect


def _setting(pattern: str, value: str, what: str) -> Callable[[str], str]:
    """An edit of the planned YAML text that sets the one value ``pattern``'s group 2 matches."""

    def edit(text: str) -> str:
        new, n = re.subn(pattern, rf"\g<1>{value}", text, count=1, flags=re.DOTALL)
        if n != 1:
            raise SystemExit(f"the planned workflow has no {what}: is it a segmentation plan?")
        return new

    return edit


VARIANTS: dict[str, Callable[[str], str] | None] = {
    "planned": None,
    "batch_4": _setting(r"(\n  batch_size: )([0-9]+)", "4", "optim.batch_size"),
    "lr_1e-3": _setting(r"(\n  lr: )([0-9.e-]+)", "0.001", "optim.lr"),
    "spatial_0.2": _setting(r"(\n  spatial:[^\n]*\n    prob: )([0-9.]+)", "0.2", "augmentation.spatial.prob"),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.sweep_seg_recipe", description=__doc__.splitlines()[0]
    )
    p.add_argument("action", choices=("run", "collect"))
    p.add_argument("runs", nargs="*", help="collect: NAME=RUN_DIR of finished runs, the plan first")
    p.add_argument("--budget", default="10m", help="the training budget of each run (default 10m)")
    p.add_argument("--out", type=Path, default=None, help="folder for the JSON result")
    a = p.parse_args(argv)
    if a.action == "run":
        if why := not_prepared():
            print(why)
            return 2
        work = WORK / "recipe" / a.budget
        work.mkdir(parents=True, exist_ok=True)
        manifest, _refused = hippocampus_manifest(work, quick=False)
        budget_s = parse_budget(a.budget)
        runs = {
            name: Path(run_medimg("segmentation", manifest, budget_s, work, name, edit)["out"])
            for name, edit in VARIANTS.items()
        }
    else:
        pairs = [r.partition("=") for r in a.runs]
        if not pairs or any(not sep or name not in VARIANTS for name, sep, _ in pairs):
            p.error(f"collect takes NAME=RUN_DIR with NAME one of {', '.join(VARIANTS)}")
        runs = {name: Path(path) for name, _, path in pairs}
    rows = collect(list(runs.values()), tta=False)
    by_variant = {name: rows[path.name] for name, path in runs.items()}
    result = {"data": str(HIPPO), "budget": a.budget, "runs": by_variant}
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / f"seg_recipe-{time.strftime('%Y%m%d-%H%M')}.json").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
