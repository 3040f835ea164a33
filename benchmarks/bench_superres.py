"""Through-plane super-resolution on real MRI: MSD Hippocampus, 4x thick slices simulated on held-out scans.

The Hippocampus images (``prepare`` in ``benchmarks/bench_explain.py`` copies them into
``~/.cache/medimg-data/hippocampus/images``; 1 mm isotropic T1 crops) are split by sorted case
name (last 20 % test, the 10 % before them validation, the rest training). ``task: superres``
(``medimg.generative``) learns 4 mm → 1 mm along the third voxel axis from the training scans'
simulated thick slices (box profile), keeps the epoch with the best validation PSNR, and on every
test scan compares its output with the real thin scan against the two named baselines measured in
the same run on the same thick scans: trilinear and cubic B-spline interpolation. The goal
(issue 22): PSNR at least 1 dB above both.

Run: ``python -m benchmarks.bench_superres`` (``--epochs``, ``--work``); the runner
(``python -m benchmarks``) lists it as skipped (its own command line, like ``bench_io``). Skips,
saying why, when the Hippocampus cache is absent. The result goes to ``benchmarks/results/superres-<UTC>.json``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

CACHE = Path.home() / ".cache/medimg-data/hippocampus"
GOAL_DB = 1.0


def manifest(cache: Path, work: Path) -> Path:
    """A manifest of every image with a fixed split (sorted names: last 20 % test, 10 % before val)."""
    import pandas as pd

    names = sorted(p.name[: -len(".nii.gz")] for p in (cache / "images").glob("*.nii.gz"))
    n = len(names)
    n_test, n_val = round(0.2 * n), round(0.1 * n)
    rows = []
    for i, name in enumerate(names):
        split = "test" if i >= n - n_test else "val" if i >= n - n_test - n_val else "train"
        rows.append(
            {
                "case_key": name,
                "patient_key": name,
                "image": str(cache / "images" / f"{name}.nii.gz"),
                "split": split,
            }
        )
    work.mkdir(parents=True, exist_ok=True)
    path = work / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def workflow(manifest_path: Path, work: Path, epochs: int) -> Any:
    from medimg.config.generative import GenerativeWorkflow

    return GenerativeWorkflow.model_validate(
        {
            "name": "hippocampus_superres",
            "task": "superres",
            "seed": 0,
            "data": {"manifest": str(manifest_path)},
            "superres": {
                "factor": 4,
                "axis": 2,
                "profile": "box",
                "features": 16,
                "layers": 5,
                "patch_size": [32, 32, 32],
                "patches_per_epoch": 48,
            },  # fmt: skip
            "optim": {"lr": 0.002, "batch_size": 4},
            "trainer": {"max_epochs": epochs},
            "tracking": {"uri": f"sqlite:///{work}/mlflow.db", "experiment": "superres"},
            "outputs": {"dir": str(work / "run")},
        }
    )


def measure(work: Path, epochs: int = 40) -> dict[str, Any]:
    """Train and measure; the result dictionary (or ``{"skipped": reason}``)."""
    import datetime
    import logging
    import resource

    import pandas as pd
    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from medimg.generative.run import run_generative

    if not (CACHE / "images").is_dir():
        return {
            "skipped": f"{CACHE / 'images'} not found: run `python -m benchmarks.bench_explain prepare` first"
        }
    wf = workflow(manifest(CACHE, work), work, epochs)
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    res = run_generative(wf)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    m = res.metrics
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "data": "MSD Hippocampus (1 mm T1 crops), 4x thick slices along axis 2 (box profile)",
        "cases": res.per_case.shape[0],
        "split": pd.read_csv(res.out_dir / "manifest.csv")["split"].value_counts().to_dict(),
        "epochs": epochs,
        "wall_s": round(time.perf_counter() - t0, 1),
        "cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1),
        "load_average": [round(load0, 1), round(os.getloadavg()[0], 1)],
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "psnr_db": {k: round(m[f"test_psnr_{k}"], 3) for k in ("sr", "trilinear", "bspline")},
        "ssim": {k: round(m[f"test_ssim_{k}"], 4) for k in ("sr", "trilinear", "bspline")},
        "gain_db": {
            "vs_trilinear": round(m["test_psnr_gain_vs_trilinear"], 3),
            "vs_bspline": round(m["test_psnr_gain_vs_bspline"], 3),
        },  # fmt: skip
        "cases_sr_beats_both": int(
            (
                (res.per_case["psnr_sr"] > res.per_case["psnr_trilinear"])
                & (res.per_case["psnr_sr"] > res.per_case["psnr_bspline"])
            ).sum()
        ),  # fmt: skip
        "goal_met": bool(min(m["test_psnr_gain_vs_trilinear"], m["test_psnr_gain_vs_bspline"]) >= GOAL_DB),
    }


def save(result: dict[str, Any]) -> Path:
    """Write the result to ``benchmarks/results/superres-<UTC time>.json`` (git-ignored)."""
    from benchmarks.common import save_result

    return save_result("superres", result)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument(
        "--work", default=None, help="manifest, MLflow store and outputs (default: in the cache)"
    )
    args = parser.parse_args()
    result = measure(Path(args.work or CACHE / "bench-superres"), args.epochs)
    print(json.dumps(result, indent=2))
    if "skipped" not in result:
        print(f"saved: {save(result)}")
