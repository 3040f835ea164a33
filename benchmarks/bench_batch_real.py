"""``predict`` and ``convert`` agree on real scanner exports (dcm2niix's QA corpus).

For each prepared ``dcm_qa*`` repository (``python -m benchmarks.bench_dicom_qa prepare``),
the whole ``In/`` tree goes through the two batch commands a radiology team runs:

* ``medimg convert ROOT OUT``: every usable series to NIfTI, plus ``manifest.csv``;
* ``medimg predict MODEL ROOT``: one case per usable series, set-aside objects listed.

and the script checks, series by series, that every 3D series ``convert`` wrote is a
``done`` case of ``predict`` whose mask lies exactly on the converted volume's grid (same
shape, affine within 1e-4 mm); that ``predict`` makes no case ``convert`` did not; that a
4D series is refused by a 3D model with a reason (not cropped to a volume); and that
derived series are set aside, not predicted. The model is a small UNet trained for a few
epochs on medimg's synthetic study; only the geometry and the bookkeeping are judged,
not the masks' anatomy.

Run: ``python benchmarks/bench_batch_real.py [--repo dcm_qa_sag ...]``. Without the
prepared cache it says how to make it and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

CACHE = Path(os.environ.get("MEDIMG_DATA", Path.home() / ".cache/medimg-data")) / "dcm_qa"
DEFAULT_REPOS = ("dcm_qa_sag", "dcm_qa_canon_61", "dcm_qa_ge", "dcm_qa_enh", "dcm_qa_12bit")
TINY = {
    "name": "batch_real", "task": "segmentation", "seed": 1,
    "data": {"manifest": "data/synth/manifest.csv",
             "synthetic": {"cases": 8, "seed": 2, "shape": [32, 30, 20], "spacing": [1.6, 1.7, 2.5]},
             "labels": {0: "background", 1: "organ", 2: "kidney"},
             "split": {"val_fraction": 0.2, "test_fraction": 0.25, "seed": 0}},
    "preprocessing": {"spacing": [2.5, 2.5, 2.5], "intensity": {"mode": "zscore"}},
    "augmentation": {"patch_size": [16, 16, 16], "samples_per_volume": 1},
    "model": {"name": "unet", "params": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}},
    "optim": {"batch_size": 2}, "trainer": {"max_epochs": 2},
    "inference": {"roi_size": [32, 32, 32]},
    "tracking": {"uri": "sqlite:///runs/mlflow.db", "experiment": "batch_real"},
    "outputs": {"dir": "runs/batch_real"},
}  # fmt: skip


def train_model(work: Path) -> Path:
    import yaml

    from medimg.cli.main import main

    (work / "wf.yaml").write_text(yaml.safe_dump(TINY))
    os.chdir(work)
    if main(["run", "wf.yaml"]) != 0:
        raise SystemExit("training the small model failed")
    return work / "runs/batch_real/model"


def _short(series_key: str) -> str:
    return "series-" + series_key.removeprefix("series-")[:12]


def check_repo(repo: str, model: Path, work: Path) -> dict:
    import nibabel as nib
    import numpy as np
    import pandas as pd

    from medimg.cli.main import main
    from medimg.inference.inputs import case_id_from_path
    from medimg.io.dicom.discover import find_files
    from medimg.io.dicom.pseudonym import pseudonym
    from medimg.io.load import is_nifti

    root = CACHE / repo / "In"
    conv, pred = work / f"{repo}-nifti", work / f"{repo}-pred"
    start = time.perf_counter()
    main(["convert", str(root), str(conv)])
    main(["predict", str(model), str(root), "--out", str(pred), "--no-progress", "--dicom", "off"])
    seconds = time.perf_counter() - start
    manifest = pd.read_csv(conv / "manifest.csv", dtype=str, keep_default_na=False)
    cohort = pd.read_csv(pred / "cohort.csv", dtype=str, keep_default_na=False)
    by_series = {
        row.case_id.split("_", 1)[1]: row for row in cohort.itertuples() if "_series-" in row.case_id
    }
    # NIfTI volumes lying in the export: convert names them by a keyed hash of their path,
    # predict by their file name.
    by_case = {row.case_id: row for row in cohort.itertuples()}
    for path in find_files(root):
        if is_nifti(path) and case_id_from_path(path) in by_case:
            by_series[_short(pseudonym(str(path), "series"))] = by_case[case_id_from_path(path)]
    problems, agree, refused_4d, derived = [], 0, 0, 0
    for row in manifest.itertuples():
        short = _short(row.series_key)
        img = nib.load(conv / row.image)
        case = by_series.get(short)
        if "derived" in row.qa_flags.split(";"):
            derived += 1
            status = cohort[cohort.case_id == short].status.tolist()
            if status != ["set_aside"]:
                problems.append(f"{row.image}: derived series not set aside ({status})")
            continue
        if case is None:
            problems.append(f"{row.image}: converted, but no predict case")
            continue
        if img.ndim == 4:
            refused_4d += case.status == "failed" and "data.channels" in case.reason
            if case.status != "failed":
                problems.append(f"{row.image}: 4D series predicted by a 3D model ({case.status})")
            continue
        if case.status != "done":
            problems.append(f"{row.image}: predict {case.status}: {case.reason}")
            continue
        mask = nib.load(pred / "cases" / case.case_id / "mask.nii.gz")
        diff = float(np.abs(mask.affine - img.affine).max())
        if mask.shape != img.shape or diff > 1e-4:
            problems.append(f"{row.image}: mask {mask.shape} vs {img.shape}, affine differs by {diff:.2g} mm")
        else:
            agree += 1
    extra = len([c for c in cohort.itertuples() if c.status in ("done", "skipped")]) - agree
    if extra:
        problems.append(f"{extra} predict case(s) with no converted series")
    return {"repo": repo, "converted": len(manifest), "same_grid": agree, "refused_4d": refused_4d,
            "derived_set_aside": derived, "set_aside": int((cohort.status == "set_aside").sum()),
            "problems": problems, "seconds": round(seconds, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", action="append", help="dcm_qa repositories (default: a 3D-heavy set)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (model, NIfTI, masks)")
    args = parser.parse_args(argv)
    repos = [r for r in (args.repo or DEFAULT_REPOS) if (CACHE / r / "In").is_dir()]
    if not repos:
        print(
            f"no prepared dcm_qa data in {CACHE}: run python -m benchmarks.bench_dicom_qa prepare",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="bench_batch_real_") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = train_model(work)
        rows = [check_repo(repo, model, work) for repo in repos]
    for r in rows:
        print(f"{r['repo']}: {r['converted']} series converted; {r['same_grid']} predicted on convert's grid; "
              f"{r['refused_4d']} 4D refused by the 3D model; {r['derived_set_aside']} derived set aside; "
              f"{r['set_aside']} objects set aside in all; {len(r['problems'])} problem(s); {r['seconds']} s")  # fmt: skip
        for p in r["problems"]:
            print("   ", p)
    out = Path(__file__).resolve().parent / "results" / f"batch_real-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    return int(any(r["problems"] for r in rows))


if __name__ == "__main__":
    raise SystemExit(main())
