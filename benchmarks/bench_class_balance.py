"""Class imbalance in a planned classification run: unweighted, class-weighted CE, balanced sampler.

On VesselMNIST3D (28^3, MedMNIST v2; ~11 % aneurysm; the published train/val/test split kept,
prepared by ``python -m benchmarks.bench_explain prepare-vessel`` into
``~/.cache/medimg-data/vesselmnist3d``) this runs ``medimg plan --budget B`` once and then
``medimg run`` three times on the same plan, changing one thing:

* ``none``: plain cross-entropy, shuffled batches;
* ``weights``: ``optim.class_weights: auto`` (n / (classes x count) from the training split);
* ``sampler``: ``data.sampler: balanced``, plain cross-entropy: each epoch draws as many cases
  with replacement, with probability 1 / class count per case.

It reports, per option, the validation AUROC history (the official val split, 191 cases, 22
aneurysms), the test AUROC of the run's own test scoring (the checkpoint with the lowest
validation loss, 382 cases, 43 aneurysms), the spread of the test probabilities (a constant
predictor has ~0) and the wall time. ``--budget`` is each run's ``trainer.max_time``.

    python -m benchmarks.bench_class_balance --budget 3m --out docs/results/class_balance.json
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd

VESSEL = Path.home() / ".cache/medimg-data/vesselmnist3d"
OPTIONS = ("none", "weights", "sampler")


def manifest(work: Path, with_test: bool) -> Path:
    """The prepared manifest with absolute paths; without the test split unless ``with_test``."""
    df = pd.read_csv(VESSEL / "manifest.csv")
    df["image"] = [str(VESSEL / p) for p in df.image]
    if not with_test:  # scoring 382 test cases takes minutes of a loaded 2-core machine per run
        df = df[df.split != "test"]
    work.mkdir(parents=True, exist_ok=True)
    df.to_csv(work / "manifest.csv", index=False)
    return work / "manifest.csv"


def run_option(option: str, plan: Path, work: Path, seed: int, epochs: int | None = None) -> dict[str, Any]:
    import numpy as np
    from mlflow.tracking import MlflowClient

    from medimg.cli.main import main

    name = f"{option}_s{seed}"
    text = plan.read_text().replace('dir: "runs/plan"', f'dir: "{work}/runs/{name}"')
    text = text.replace("seed: 0\n", f"seed: {seed}\n", 1)
    text = re.sub(
        r"\n  (class_weights|sampler): .*\n", "\n", text
    )  # the plan's choice, replaced by the option's
    text = text.replace(
        "data:\n", f"data:\n  sampler: {'balanced' if option == 'sampler' else 'shuffle'}\n", 1
    )
    text = text.replace(
        "optim:\n", f"optim:\n  class_weights: {'auto' if option == 'weights' else 'none'}\n", 1
    )
    if epochs:  # the same steps for every option, whatever the machine's load: no budget, no warm-up
        text = re.sub(r'  max_time: "[^"]*".*\n', f"  max_epochs: {epochs}\n", text)
        text = re.sub(r"  warmup_epochs: 1.*\n", "  warmup_epochs: 0\n", text)
    text += f'tracking:\n  uri: "sqlite:///{work}/mlflow.db"\n  experiment: "class_balance"\n'
    wf = work / f"{name}.yaml"
    wf.write_text(text)
    t0 = time.perf_counter()
    code = main(["run", str(wf)])
    wall = time.perf_counter() - t0
    out = work / "runs" / name
    info = json.loads((out / "run.json").read_text())
    client = MlflowClient(info["tracking_uri"])
    val = [round(m.value, 4) for m in client.get_metric_history(info["run_id"], "val_auroc")]
    test: dict[str, Any] = {}
    if (out / "test_summary.json").is_file():
        summary = json.loads((out / "test_summary.json").read_text())
        per_case = pd.read_csv(out / "test_per_case.csv")
        prob = per_case[[c for c in per_case.columns if c.startswith("prob")][-1]].to_numpy(float)
        test = {"test_auroc": round(summary["test_auroc"], 4), "test_auprc": round(summary["test_auprc"], 4),
                "test_prob_std": round(float(np.std(prob)), 4)}  # fmt: skip
    metrics = client.get_run(info["run_id"]).data.metrics
    return {
        "option": option,
        "seed": seed,
        "exit_code": code,
        "wall_s": round(wall, 1),
        "val_auroc": val,
        "val_loss": [round(m.value, 4) for m in client.get_metric_history(info["run_id"], "val_loss")],
        "steps": metrics.get("budget_schedule_steps"),
        "intensity": client.get_run(info["run_id"]).data.params.get("preprocessing.intensity.nonzero"),
        "class_weights": client.get_run(info["run_id"]).data.params.get("optim.class_weights"),
        "sampler": client.get_run(info["run_id"]).data.params.get("data.sampler"),
        **test,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", default="3m")
    p.add_argument("--work", default="/tmp/medimg-class-balance")
    p.add_argument("--option", choices=OPTIONS, action="append")
    p.add_argument("--seed", type=int, action="append")
    p.add_argument("--out", help="JSON file to write the results to")
    p.add_argument(
        "--epochs", type=int, help="train this many epochs instead of the plan's budget (fixed steps)"
    )
    p.add_argument("--with-test", action="store_true", help="keep the test split (scored by every run)")
    a = p.parse_args(argv)
    from medimg.cli.main import main as medimg

    work = Path(a.work)
    csv = manifest(work, a.with_test)
    plan = work / "plan.yaml"
    medimg(["plan", str(csv), "--task", "classification", "--label-column", "aneurysm"]
           + ["--out", str(plan), "--budget", a.budget])  # fmt: skip
    results = []
    for seed in a.seed or [0]:
        for option in a.option or OPTIONS:
            results.append(run_option(option, plan, work, seed, a.epochs))
            print(json.dumps(results[-1]), flush=True)
    if a.out:
        Path(a.out).write_text(
            json.dumps(
                {"budget": a.budget, "epochs": a.epochs, "data": str(VESSEL), "runs": results}, indent=1
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
