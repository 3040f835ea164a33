"""Cohort inference: one ``medimg predict`` over N cases vs the single-case command run once per case.

Both sides are the real command line (``python -m medimg predict MODEL ... --out``), run
as subprocesses on the same small synthetic cases (the quickstart's 64x64x40 oblique
NIfTI images) with the same saved model (quickstart UNet, fixed random weights):

* baseline "one command per case": N subprocesses, each loading Python, torch and the
  model, reading one case, predicting, writing its outputs;
* medimg: one subprocess over the folder of cases: the model is loaded once, the next
  case is read while the current one is on the network, outputs are written in the
  background (``medimg.inference.cohort.run_cohort``).

The masks of both are compared voxel for voxel. Peak memory includes the child processes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

NAME = "cohort"
ROOT = Path(__file__).resolve().parents[1]


def _predict(model: Path, inputs: list[Path], out: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "medimg",
        "predict",
        str(model),
        *map(str, inputs),
        "--out",
        str(out),
        "--no-progress",
        "--dicom",
        "off",
        "--device",
        "cpu",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"medimg predict failed ({proc.returncode}): {proc.stderr[-2000:]}")


def _masks(out: Path) -> dict[str, np.ndarray]:
    import nibabel as nib

    return {p.parent.name: np.asarray(nib.load(p).dataobj) for p in sorted(out.glob("cases/*/mask.nii.gz"))}


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure; return result rows (see ``benchmarks.common.row``)."""
    import torch

    from benchmarks.bench_train import _workflow
    from benchmarks.common import interleaved, row
    from medimg.data.synthetic import write_synthetic_study
    from medimg.inference.model_io import save_trained
    from medimg.models.networks import build_model

    n, repeat = (2, 1) if quick else (10, 1)
    with tempfile.TemporaryDirectory(prefix="bench_cohort_") as tmp:
        root = Path(tmp)
        write_synthetic_study(root / "study", cases=n, seed=1)
        scans = root / "scans"
        scans.mkdir()
        images = []
        for i in range(n):
            images.append(scans / f"case_{i:04d}.nii.gz")
            shutil.copy(root / f"study/cases/case_{i:04d}/image.nii.gz", images[-1])
        wf = _workflow(root / "study/manifest.csv")
        torch.manual_seed(0)
        model = save_trained(build_model(wf).eval(), wf, root / "model")
        counter = {"baseline": 0, "medimg": 0}

        def one_per_case() -> Path:
            counter["baseline"] += 1
            out = root / f"base_{counter['baseline']}"
            for img in images:
                _predict(model, [img], out)
            return out

        def cohort() -> Path:
            counter["medimg"] += 1
            out = root / f"medimg_{counter['medimg']}"
            _predict(model, [scans], out)
            return out

        res = interleaved({"baseline": one_per_case, "medimg": cohort}, repeat)
        base, ours = _masks(res["baseline"]["out"]), _masks(res["medimg"]["out"])
        same = (
            sorted(base) == sorted(ours)
            and len(ours) == n
            and all(np.array_equal(base[k], ours[k]) for k in base)
        )
    return [
        row(
            NAME,
            f"`medimg predict` over {n} cases of 64x64x40 (quickstart UNet), CPU",
            "s",
            res["medimg"]["median_s"],
            f"single-case command once per case ({n} subprocesses)",
            res["baseline"]["median_s"],
            goal=3.0,
            peak_rss_mib_medimg=res["medimg"]["peak_mib"],
            peak_rss_mib_baseline=res["baseline"]["peak_mib"],
            repeats=repeat,
            masks_identical=same,
        )
    ]


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=2))
