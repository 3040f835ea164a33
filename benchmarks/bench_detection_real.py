"""Lesion-style detection on real MRI: boxes of the MSD Hippocampus labels, medimg's RetinaNet vs a mean box.

The Hippocampus images and labels (``prepare`` in ``benchmarks/bench_explain.py`` copies them into
``~/.cache/medimg-data/hippocampus/{images,labels}``; 1 mm isotropic T1 crops around one
hippocampus) give one box per 26-connected component of the label (anterior and posterior
hippocampus together, as ``detection.mask_column`` reads it). The split is fixed before any run:
cases sorted by name, the last 20 % test, the rest training (a case without a label file is left
out, named in the result). ``task: detection`` (``medimg.detection``) trains on CPU for
``--epochs`` and scores the test split with FROC (mean sensitivity at 1/8 ... 8 false positives
per scan, a hit being a centre inside the ellipsoid of the true box) and AP at IoU 0.1 and 0.5,
each with its patient-bootstrap 95 % CI.

The named baseline, measured in the same run on the same test scans with the same scoring: **the
mean training box**, one box per scan at the training boxes' mean centre (as a fraction of each
image's extent along its axes, so it follows each crop's size) with their mean size in voxels and
score 1. The crops are centred on the hippocampus, so this baseline is strong; the detector has to
find the box from the image to beat it. Because FROC and AP at IoU 0.5 saturate on this data (both
sides reach 1.0: every scan has one large box near the crop's centre), the script also reports how
well each scan's best box fits the true one: mean IoU and the centre distance in mm (median, 90th
percentile).

Run: ``python -m benchmarks.bench_detection_real`` (``--epochs``, ``--work``, ``--limit`` to run
on the first N cases only); the runner (``python -m benchmarks``) lists it as skipped (its own
command line). Skips, saying why and how to prepare the data, when the Hippocampus cache is absent.
The result goes to ``benchmarks/results/detection_real-<UTC>.json``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

CACHE = Path.home() / ".cache/medimg-data/hippocampus"
TEST_FRACTION = 0.2


def not_prepared(cache: Path) -> str | None:
    """Why the benchmark cannot run (``None`` when the images and labels are in ``cache``)."""
    missing = [str(cache / d) for d in ("images", "labels") if not (cache / d).is_dir()]
    if missing:
        return f"{', '.join(missing)} not found: run `python -m benchmarks.bench_explain prepare` first"
    return None


def manifest(cache: Path, work: Path, limit: int | None = None) -> tuple[Path, list[str]]:
    """The manifest (``case_key, patient_key, image, mask, split``) and the cases left out (no label).

    Cases sorted by name; the last 20 % (rounded) are test, the others training.
    """
    import pandas as pd

    names = sorted(p.name[: -len(".nii.gz")] for p in (cache / "images").glob("*.nii.gz"))
    unlabelled = [n for n in names if not (cache / "labels" / f"{n}.nii.gz").is_file()]
    names = [n for n in names if n not in unlabelled][:limit]
    n_test = round(TEST_FRACTION * len(names))
    rows = [
        {
            "case_key": name,
            "patient_key": name,
            "image": str(cache / "images" / f"{name}.nii.gz"),
            "mask": str(cache / "labels" / f"{name}.nii.gz"),
            "split": "test" if i >= len(names) - n_test else "train",
        }
        for i, name in enumerate(names)
    ]
    work.mkdir(parents=True, exist_ok=True)
    path = work / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path, unlabelled


def workflow(manifest_path: Path, work: Path, epochs: int, n_boot: int = 1000) -> Any:
    from medimg.config.detection import parse_detection_workflow

    return parse_detection_workflow(
        {
            "name": "hippocampus_detection",
            "task": "detection",
            "seed": 0,
            "data": {"manifest": str(manifest_path), "split": {"use_manifest_split": True}},
            "detection": {"mask_column": "mask", "score_thresh": 0.05, "n_boot": n_boot},
            "optim": {"optimizer": "adamw", "lr": 0.003, "batch_size": 4},
            "trainer": {"max_epochs": epochs},
            "tracking": {"uri": f"sqlite:///{work}/mlflow.db", "experiment": "detection_real"},
            "outputs": {"dir": str(work / "run")},
        },
        source="bench_detection_real",
    )


def mean_boxes(train: list[Any], test: list[Any]) -> list[Any]:
    """The baseline's box for each test scan: the training boxes' mean relative centre and mean size."""
    from medimg.detection.boxes import VoxelBox

    rel = np.array([np.asarray(b.centre) / np.asarray(s.image.shape[:3]) for s in train for b in s.boxes])
    extent = np.array([b.extent for s in train for b in s.boxes]).mean(0)
    return [
        VoxelBox(tuple(float(v) for v in rel.mean(0) * np.asarray(s.image.shape[:3])), tuple(extent), 1.0)  # type: ignore[arg-type]
        for s in test
    ]


def mean_box_baseline(train: list[Any], test: list[Any], seed: int = 0, n_boot: int = 1000) -> dict[str, Any]:
    """FROC / AP of one box per test scan at the training boxes' mean relative centre and mean size."""
    from medimg.detection.scoring import scan_boxes, score_detection

    scans = [scan_boxes(s.boxes, [g], s.image) for s, g in zip(test, mean_boxes(train, test), strict=True)]
    return score_detection(scans, [s.patient_key for s in test], n_boot=n_boot, seed=seed)


def top_box_fit(test: list[Any], top: list[Any]) -> dict[str, float]:
    """How well each scan's best box fits its (first) true box: mean IoU, centre distance in mm.

    ``top`` holds one box (or ``None``, no detection: IoU 0, distance not counted) per test scan.
    """
    from medimg.detection.boxes import voxel_to_world
    from medimg.detection.metrics import box_iou

    ious, dists = [], []
    for s, box in zip(test, top, strict=True):
        if not s.boxes:
            continue
        truth = s.boxes[0]
        if box is None:
            ious.append(0.0)
            continue
        ious.append(float(box_iou(np.array([truth.corners()]), np.array([box.corners()]))[0, 0]))
        a, b = voxel_to_world(truth, s.image).centre_mm, voxel_to_world(box, s.image).centre_mm
        dists.append(float(np.linalg.norm(np.subtract(a, b))))
    return {
        "mean_iou": round(float(np.mean(ious)), 3),
        "centre_mm_median": round(float(np.median(dists)), 2) if dists else float("nan"),
        "centre_mm_p90": round(float(np.quantile(dists, 0.9)), 2) if dists else float("nan"),
    }


def predicted_top_boxes(test: list[Any], boxes_csv: Path) -> list[Any]:
    """The best-scoring predicted box of each test scan from a study's ``test_boxes.csv``."""
    import pandas as pd

    from medimg.detection.boxes import VoxelBox

    frame = pd.read_csv(boxes_csv) if boxes_csv.stat().st_size > 1 else pd.DataFrame(columns=["case_key"])
    out = []
    for s in test:
        rows = frame[frame["case_key"].astype(str) == s.case_key]
        if rows.empty:
            out.append(None)
            continue
        r = rows.sort_values("score", ascending=False).iloc[0]
        centre = tuple(float(r[f"centre_{a}"]) for a in "ijk")
        out.append(VoxelBox(centre, tuple(float(r[f"extent_{a}"]) for a in "ijk"), float(r["score"])))  # type: ignore[arg-type]
    return out


def _scores(report: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key in ("froc", "ap@0.1", "ap@0.5"):
        ci = report["ci"].get(key, {})
        out[key] = {
            "value": round(float(report["scores"][key]), 3),
            "ci95": [round(float(ci.get("low", np.nan)), 3), round(float(ci.get("high", np.nan)), 3)],
        }
    return out


def measure(work: Path, epochs: int = 6, limit: int | None = None, n_boot: int = 1000) -> dict[str, Any]:
    """Train, score, and score the baseline; the result dictionary (or ``{"skipped": reason}``)."""
    import datetime
    import resource

    import pandas as pd
    import torch

    from medimg.detection.cases import load_samples
    from medimg.detection.study import run_detection_study

    reason = not_prepared(CACHE)
    if reason:
        return {"skipped": reason}
    path, unlabelled = manifest(CACHE, work, limit)
    wf = workflow(path, work, epochs, n_boot)
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    res = run_detection_study(wf)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter() - t0
    frame = pd.read_csv(path)
    samples = load_samples(frame, path.parent, mask_column="mask")
    by = {k: [s for s, sp in zip(samples, frame["split"], strict=True) if sp == k] for k in ("train", "test")}
    base = mean_box_baseline(by["train"], by["test"], n_boot=n_boot)
    medimg_scores, base_scores = _scores(res.report), _scores(base)
    medimg_scores["top_box"] = top_box_fit(
        by["test"], predicted_top_boxes(by["test"], res.out_dir / "test_boxes.csv")
    )
    base_scores["top_box"] = top_box_fit(by["test"], mean_boxes(by["train"], by["test"]))
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "data": "MSD Task04 Hippocampus (1 mm T1 crops); one box per 26-connected component of the label",
        "split": {**frame["split"].value_counts().to_dict(), "rule": "sorted names, last 20 % test"},
        "left_out_unlabelled": unlabelled,
        "test_lesions": int(res.report["lesions"]),
        "epochs": epochs,
        "plan": {
            k: v for k, v in json.loads((res.out_dir / "plan.json").read_text()).items() if k != "box_stats"
        },
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1),
        "load_average": [round(load0, 1), round(os.getloadavg()[0], 1)],
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "medimg_retinanet": medimg_scores,
        "baseline_mean_box": base_scores,
        "difference": {
            k: round(medimg_scores[k]["value"] - base_scores[k]["value"], 3)
            for k in ("froc", "ap@0.1", "ap@0.5")
        },
    }


def save(result: dict[str, Any]) -> Path:
    """Write the result to ``benchmarks/results/detection_real-<UTC time>.json`` (git-ignored)."""
    import datetime

    from medimg.io.atomic import atomic_write_text

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    path = Path(__file__).resolve().parent / "results" / f"detection_real-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2))
    return path


def print_summary(result: dict[str, Any]) -> None:
    """One line per metric: medimg against the named baseline."""
    for key in ("froc", "ap@0.1", "ap@0.5"):
        m, b = result["medimg_retinanet"][key], result["baseline_mean_box"][key]
        print(
            f"{key:7s} medimg RetinaNet {m['value']:.3f} (CI {m['ci95'][0]:.3f}-{m['ci95'][1]:.3f}) vs "
            f"mean training box {b['value']:.3f} (CI {b['ci95'][0]:.3f}-{b['ci95'][1]:.3f}): "
            f"{result['difference'][key]:+.3f}"
        )
    m, b = result["medimg_retinanet"]["top_box"], result["baseline_mean_box"]["top_box"]
    print(
        f"best box per scan: mean IoU {m['mean_iou']:.3f} vs {b['mean_iou']:.3f}, centre error median "
        f"{m['centre_mm_median']:.2f} mm vs {b['centre_mm_median']:.2f} mm (90th percentile "
        f"{m['centre_mm_p90']:.2f} vs {b['centre_mm_p90']:.2f})"
    )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument(
        "--limit", type=int, default=None, help="only the first N labelled cases (a quick check)"
    )
    parser.add_argument(
        "--work", default=None, help="manifest, MLflow store and outputs (default: in the cache)"
    )
    args = parser.parse_args()
    result = measure(Path(args.work or CACHE / "bench-detection"), args.epochs, args.limit)
    print(json.dumps(result, indent=2))
    if "skipped" not in result:
        print_summary(result)
        print(f"saved: {save(result)}")
