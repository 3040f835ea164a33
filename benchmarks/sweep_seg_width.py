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
on 2 cores); ``collect RUN_DIR...`` re-reads finished runs (``medimg run`` output folders).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.bench_study_real import (
    HIPPO,
    WORK,
    hippocampus_manifest,
    not_prepared,
    parse_budget,
    run_medimg,
    validation_curve,
)


def double_width(text: str) -> str:
    """The planned workflow's DynUNet with every level twice as wide (the rule before: from 16)."""
    found = re.search(r"filters: \[([0-9, ]+)\]", text)
    if found is None:
        raise SystemExit("the planned workflow names no DynUNet filters: is it a segmentation plan?")
    filters = [int(v) for v in found.group(1).split(",")]
    return text.replace(f"filters: {filters}", f"filters: {[2 * f for f in filters]}")


def validation_with_and_without(run_dir: Path) -> dict[str, float]:
    """Validation mean Dice of a finished run: with/without flip TTA, with/without its postprocessing."""
    import pandas as pd

    from medimg.inference.model_io import load_trained
    from medimg.inference.predictor import Predictor
    from medimg.inference.score import score_cases

    tm = load_trained(run_dir / "model")
    df = pd.read_csv(run_dir / "manifest.csv")
    val = df[df.split == "val"].rename(columns={"label": "target"})
    out = {}
    for tta in (False, True):
        wf = tm.workflow.model_copy(deep=True)
        wf.inference.tta_flips = tta
        for pp in (None, tm.postprocessing):
            per_case = score_cases(Predictor(tm.model, wf, device="cpu", postprocessing=pp), val)
            key = f"tta_{'on' if tta else 'off'}_postprocessing_{'on' if pp else 'off'}"
            out[key] = round(float(per_case["dice_mean"].mean()), 4)
    out["n_val"] = len(val)
    return out


def collect(run_dirs: list[Path], tta: bool = True) -> dict[str, Any]:
    """Steps, step time, the validation curve and the test Dice of each run; TTA for the first."""
    from mlflow.tracking import MlflowClient

    rows: dict[str, Any] = {}
    for i, run_dir in enumerate(run_dirs):
        info = json.loads((run_dir / "run.json").read_text())
        metrics = MlflowClient(info["tracking_uri"]).get_run(info["run_id"]).data.metrics
        resolved = yaml.safe_load((run_dir / "workflow.resolved.yaml").read_text())
        curve = validation_curve(info["tracking_uri"], info["run_id"], "segmentation")
        rows[run_dir.name] = {
            "filters": resolved["model"]["params"]["filters"],
            "batch_size": resolved["optim"]["batch_size"],
            "lr": resolved["optim"]["lr"],
            "spatial_prob": resolved["augmentation"]["spatial"]["prob"],
            "steps": int(metrics["budget_schedule_steps"]),
            "step_s": round(metrics["budget_step_s"], 3),
            "trained_s": round(metrics["budget_elapsed_s"], 1),
            "val_dice_final": curve[-1][1] if curve else None,
            "val_curve": curve,
            "test_dice_mean (record only)": json.loads((run_dir / "test_summary.json").read_text())[
                "test_dice_mean"
            ],
        }
        if tta and i == 0:
            rows[run_dir.name]["validation"] = validation_with_and_without(run_dir)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.sweep_seg_width", description=__doc__.splitlines()[0]
    )
    p.add_argument("action", choices=("run", "collect"))
    p.add_argument(
        "runs", nargs="*", type=Path, help="collect: finished run folders, the planned width first"
    )
    p.add_argument("--budget", default="10m", help="the training budget of each run (default 10m)")
    p.add_argument("--out", type=Path, default=None, help="folder for the JSON result")
    a = p.parse_args(argv)
    if a.action == "run":
        if why := not_prepared():
            print(why)
            return 2
        work = WORK / "width" / a.budget
        work.mkdir(parents=True, exist_ok=True)
        manifest, _refused = hippocampus_manifest(work, quick=False)
        budget_s = parse_budget(a.budget)
        runs = [
            Path(run_medimg("segmentation", manifest, budget_s, work, name, edit)["out"])
            for name, edit in (("width_planned", None), ("width_double", double_width))
        ]
    else:
        runs = a.runs
    result = {"data": str(HIPPO), "budget": a.budget, "runs": collect(runs)}
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / f"seg_width-{time.strftime('%Y%m%d-%H%M')}.json").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
