"""What the segmentation sweeps share: train the plan and its one-key variants, read the runs, write the JSON.

A sweep (``benchmarks/sweep_seg_width.py``, ``benchmarks/sweep_seg_recipe.py``) names its variants,
each an edit of the planned workflow's YAML text (``None``: the plan as written). ``run`` plans the
prepared MSD Hippocampus study with ``medimg plan --budget B`` and trains every variant one after
another with ``medimg run`` (:func:`benchmarks.bench_study_real.run_medimg`); ``collect
NAME=RUN_DIR...`` re-reads finished runs. Each variant is judged on the **validation** split fixed
before tuning; the test Dice ``medimg run`` scores is kept for the record, never to choose.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
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
from benchmarks.common import machine

Variants = dict[str, Callable[[str], str] | None]


def _cases(run_dir: Path) -> Any:
    """The cases a finished run was trained, validated and tested on (its ``manifest.csv``), labels as targets."""
    import pandas as pd

    return pd.read_csv(run_dir / "manifest.csv").rename(columns={"label": "target"})


def validation_with_and_without(run_dir: Path) -> dict[str, float]:
    """Validation mean Dice of a finished run: with/without flip TTA, with/without its postprocessing."""
    from medimg.inference.model_io import load_trained
    from medimg.inference.predictor import Predictor
    from medimg.inference.score import score_cases

    tm = load_trained(run_dir / "model")
    val = _cases(run_dir).query("split == 'val'")
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


def validation_of_ensemble(run_dirs: list[Path]) -> dict[str, Any]:
    """Validation mean Dice of the runs' mean probabilities, as ``medimg predict --model A --model B`` makes them.

    Each member keeps its own inference (flip TTA as planned); the runs must share their splits. The
    test cases are scored too, for the record only.
    """
    from medimg.inference.ensemble import load_ensemble, make_predictor
    from medimg.inference.score import score_cases

    cases = _cases(run_dirs[0])
    splits = sorted(zip(cases["split"], cases["case_key"], strict=True))
    for other in run_dirs[1:]:
        theirs = _cases(other)
        if sorted(zip(theirs["split"], theirs["case_key"], strict=True)) != splits:
            raise SystemExit(f"{other} splits its cases otherwise than {run_dirs[0]}: no common ensemble")
    val, test = cases[cases.split == "val"], cases[cases.split == "test"]
    ens = load_ensemble([str(d / "model") for d in run_dirs])
    predictor = make_predictor(ens, "cpu")
    per_case, per_test = score_cases(predictor, val), score_cases(predictor, test)
    return {
        "members": [d.name for d in run_dirs],
        "tta_flips": [m.workflow.inference.tta_flips for m in ens.members],
        "postprocessing": bool(ens.postprocessing and ens.postprocessing.steps),
        "dice_mean": round(float(per_case["dice_mean"].mean()), 4),
        "n_val": len(val),
        "test_dice_mean (record only)": round(float(per_test["dice_mean"].mean()), 4),
        "n_test": len(test),
    }


def collect(runs: dict[str, Path], tta_of: str | None = None, every_run: bool = False) -> dict[str, Any]:
    """Per variant: the settings swept, steps, step time, the validation curve, the test Dice (record).

    ``tta_of`` names the variant whose validation cases are also scored with and without flip TTA;
    ``every_run`` scores every run so.
    """
    from mlflow.tracking import MlflowClient

    rows: dict[str, Any] = {}
    for name, run_dir in runs.items():
        info = json.loads((run_dir / "run.json").read_text())
        metrics = MlflowClient(info["tracking_uri"]).get_run(info["run_id"]).data.metrics
        resolved = yaml.safe_load((run_dir / "workflow.resolved.yaml").read_text())
        curve = validation_curve(info["tracking_uri"], info["run_id"], "segmentation")
        test = json.loads((run_dir / "test_summary.json").read_text())["test_dice_mean"]
        env = json.loads((run_dir / "environment.json").read_text())
        rows[name] = {
            "run": run_dir.name,
            "trained_on": {k: env.get(k) for k in ("cpu_count", "torch", "cuda", "gpus")},
            "filters": resolved["model"]["params"]["filters"],
            "res_block": bool(resolved["model"]["params"].get("res_block", False)),
            "patch_size": resolved["augmentation"]["patch_size"],
            "batch_size": resolved["optim"]["batch_size"],
            "lr": resolved["optim"]["lr"],
            "spatial_prob": resolved["augmentation"]["spatial"]["prob"],
            "steps": int(metrics["budget_schedule_steps"]),
            "step_s": round(metrics["budget_step_s"], 3),
            "trained_s": round(metrics["budget_elapsed_s"], 1),
            "val_dice_final": curve[-1][1] if curve else None,
            "val_curve": curve,
            "test_dice_mean (record only)": test,
        }
        if name == tta_of or every_run:
            rows[name]["validation"] = validation_with_and_without(run_dir)
    return rows


def sweep_main(
    argv: list[str] | None,
    doc: str,
    variants: Variants,
    prefix: str,
    tta_of: str | None = None,
    default_budget: str = "10m",
    ensemble: bool = False,
) -> int:
    """The command line of sweep ``benchmarks/sweep_<prefix>.py``: ``run`` or ``collect NAME=RUN_DIR...``, then the JSON."""
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.sweep_{prefix}", description=doc.splitlines()[0])
    p.add_argument("action", choices=("run", "collect"))
    p.add_argument("runs", nargs="*", help="collect: NAME=RUN_DIR of finished runs, the plan first")
    p.add_argument(
        "--budget", default=default_budget, help=f"the training budget of each run (default {default_budget})"
    )
    p.add_argument("--out", type=Path, default=None, help="folder for the JSON result")
    a = p.parse_args(argv)
    if a.action == "run":
        if why := not_prepared():
            print(why)
            return 2
        work = WORK / prefix / a.budget
        work.mkdir(parents=True, exist_ok=True)
        manifest, _refused = hippocampus_manifest(work, quick=False)
        budget_s = parse_budget(a.budget)
        runs = {
            name: Path(run_medimg("segmentation", manifest, budget_s, work, f"{prefix}_{name}", edit)["out"])
            for name, edit in variants.items()
        }
    else:
        pairs = [r.partition("=") for r in a.runs]
        if not pairs or any(not sep or name not in variants for name, sep, _ in pairs):
            p.error(f"collect takes NAME=RUN_DIR with NAME one of {', '.join(variants)}")
        runs = {name: Path(path) for name, _, path in pairs}
    result: dict[str, Any] = {
        "data": str(HIPPO),
        "machine": machine(),  # where collect scored the validation cases; each run names its own
        "budget": a.budget,
        "runs": collect(runs, tta_of, ensemble),
    }
    if ensemble:
        result["ensemble_validation"] = validation_of_ensemble(list(runs.values()))
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / f"{prefix}-{time.strftime('%Y%m%d-%H%M')}.json").write_text(text)
    return 0
