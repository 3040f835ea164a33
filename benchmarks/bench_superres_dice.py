"""Does super-resolution help a downstream segmentation? MSD Hippocampus, 4x thick slices, Dice on the thin grid.

A segmentation UNet trained on thin (1 mm) scans is applied to each held-out scan in four versions,
all on the thin scan's own grid (same shape, same affine):

(a) the thin original (the upper bound),
(b) the simulated 4x thick scan (box profile, axis 2) interpolated back by trilinear interpolation,
(c) by cubic B-spline interpolation,
(d) super-resolved by ``task: superres`` (:mod:`medimg.generative`).

Each answer is compared with the true labels (Dice of labels 1 and 2 and their mean); the report
gives the mean Dice of each version with a bootstrap CI (cases resampled) and the paired
differences (d) − (b) and (d) − (c) with bootstrap CIs.

Models and the split, fixed before anything is measured:

* the segmentation model is ``benchmarks/bench_explain.py``'s (20 epochs, trained with ``medimg run``
  on its split: the last 20 % of the sorted case names test, the last 10 % of the rest validation);
  reused when already trained in ``~/.cache/medimg-data/hippocampus/bench``;
* the super-resolution model is ``benchmarks/bench_superres.py``'s (its own split by sorted name,
  the same 20 % test); reused when already trained in ``~/.cache/medimg-data/hippocampus/bench-superres``;
* the evaluated cases are those in the test split of both; the benchmark refuses to run when one of
  them is in either model's training or validation data.

Run: ``python -m benchmarks.bench_superres_dice``; skips, saying why, when the Hippocampus cache is
absent. The result goes to ``benchmarks/results/superres-dice-<UTC>.json``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medimg.io.volume import Volume

CACHE = Path.home() / ".cache/medimg-data/hippocampus"
CONDITIONS = ("thin", "trilinear", "bspline", "sr")
LABELS = (1, 2)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean masks (NaN when both are empty).

    Example:
        >>> dice(np.array([1, 1, 0, 0], bool), np.array([1, 0, 0, 0], bool))
        0.6666666666666666
    """
    total = int(pred.sum()) + int(ref.sum())
    return float(2 * np.logical_and(pred, ref).sum() / total) if total else float("nan")


def candidates(thin: Volume, net: Any, cfg: Any) -> dict[str, Volume]:
    """The four inputs of the segmentation, all on ``thin``'s grid: thin, trilinear, B-spline, super-resolved.

    ``thin`` must already hold a multiple of ``cfg.factor`` slices along ``cfg.axis``.
    """
    from medimg.generative.slices import interpolate_thin
    from medimg.generative.superres_study import super_resolve, thick_volume

    thick = thick_volume(thin, cfg)
    out = {"thin": thin}
    for name, order in (("trilinear", 1), ("bspline", 3)):
        data = interpolate_thin(np.asarray(thick.data), cfg.axis, cfg.factor, order=order)
        out[name] = Volume(data, thin.affine, thin.space)
    out["sr"] = super_resolve(net, thick, cfg)
    for name, vol in out.items():  # every answer is compared on the thin grid itself
        if vol.shape != thin.shape or not np.allclose(vol.affine, thin.affine, atol=1e-6):
            raise AssertionError(f"{name}: shape {vol.shape} / affine differ from the thin grid")
    return out


def score_case(
    thin: Volume, label: np.ndarray, net: Any, cfg: Any, segment: Callable[[Volume], np.ndarray]
) -> dict[str, float]:
    """``dice_<label>_<condition>`` and ``dice_mean_<condition>`` of one case (``label`` on ``thin``'s grid)."""
    row: dict[str, float] = {}
    for name, vol in candidates(thin, net, cfg).items():
        mask = segment(vol)
        scores = [dice(mask == k, label == k) for k in LABELS]
        row.update({f"dice_{k}_{name}": s for k, s in zip(LABELS, scores, strict=True)})
        row[f"dice_mean_{name}"] = float(np.nanmean(scores))
    return row


def summarise(per_case: Any, n_boot: int = 2000) -> dict[str, Any]:
    """Mean Dice of each condition with a 95 % bootstrap CI, and the paired differences sr − trilinear/B-spline."""
    import pandas as pd

    from medimg.evaluation.bootstrap import Resampling, bootstrap_ci

    frame = per_case.copy()
    frame["diff_vs_trilinear"] = frame["dice_mean_sr"] - frame["dice_mean_trilinear"]
    frame["diff_vs_bspline"] = frame["dice_mean_sr"] - frame["dice_mean_bspline"]
    columns = [f"dice_mean_{c}" for c in CONDITIONS] + ["diff_vs_trilinear", "diff_vs_bspline"]
    ci = bootstrap_ci(pd.DataFrame(frame[columns]), columns, Resampling(None, n_boot=n_boot))
    out = {k: [round(ci[k].estimate, 4), round(ci[k].low, 4), round(ci[k].high, 4)] for k in columns}
    out["cases_sr_better_than_trilinear"] = int((frame["diff_vs_trilinear"] > 0).sum())
    out["cases_sr_better_than_bspline"] = int((frame["diff_vs_bspline"] > 0).sum())
    return out


def evaluation_cases(seg_manifest: Path, sr_manifest: Path) -> Any:
    """The rows of the cases in the test split of both models' manifests; refuses any overlap with training."""
    import pandas as pd

    seg, sr = pd.read_csv(seg_manifest), pd.read_csv(sr_manifest)
    seen = set(seg.loc[seg["split"] != "test", "case_key"]) | set(sr.loc[sr["split"] != "test", "case_key"])
    both = sorted(
        set(seg.loc[seg["split"] == "test", "case_key"]) & set(sr.loc[sr["split"] == "test", "case_key"])
    )
    if not both or set(both) & seen:
        raise SystemExit(
            f"no clean held-out cases: {len(both)} in both test splits, {len(set(both) & seen)} seen"
        )
    return seg.set_index("case_key").loc[both].reset_index()


def _models(epochs: int) -> tuple[Path, Path, dict[str, Any]]:
    """The segmentation and super-resolution model folders (trained here when absent) and how they came."""
    from benchmarks import bench_explain, bench_superres

    seg_work, sr_work = CACHE / "bench", CACHE / "bench-superres"
    seg_manifest = seg_work / "manifest.csv"
    if not seg_manifest.is_file():
        seg_manifest = bench_explain.checked_manifest(CACHE, seg_work)[0]
    seg_model, seg_training = bench_explain.train(seg_work, seg_manifest)
    sr_model = sr_work / "run" / "model"
    if (sr_model / "model.safetensors").is_file():
        sr_training: dict[str, Any] = {"reused": str(sr_model)}
    else:
        sr_training = bench_superres.measure(sr_work, epochs)
    info = {"segmentation": seg_training, "superres": sr_training}
    return seg_model, sr_model, info


def _segmenter(seg_model: Path, tmp: Path) -> Callable[[Volume], np.ndarray]:
    """Segment a volume as ``medimg predict`` does (the model's own preprocessing; mask on the input grid)."""
    from medimg.inference.model_io import load_trained
    from medimg.inference.predictor import Predictor
    from medimg.io.nifti import save_nifti

    tm = load_trained(str(seg_model))
    predictor = Predictor(tm.model, tm.workflow, device="cpu")

    def segment(vol: Volume) -> np.ndarray:
        path = save_nifti(
            Volume(np.asarray(vol.data, np.float32), vol.affine, vol.space), tmp / "input.nii.gz"
        )
        pred = predictor.predict_path(str(path), "case")
        assert pred.mask is not None and pred.mask.shape == vol.shape
        return np.asarray(pred.mask)

    return segment


def measure(work: Path, epochs: int = 40) -> dict[str, Any]:
    """Models, held-out cases, four segmentations per case; the result dictionary (or ``{"skipped": reason}``)."""
    import datetime
    import resource

    import pandas as pd

    from medimg.generative.apply import load_superres_model
    from medimg.generative.slices import crop_to_multiple
    from medimg.generative.superres_study import read_thin
    from medimg.io.load import load_image

    if not (CACHE / "images").is_dir() or not (CACHE / "labels").is_dir():
        return {
            "skipped": f"{CACHE}/images or labels not found: run `python -m benchmarks.bench_explain prepare` first"
        }
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    seg_model, sr_model, trained = _models(epochs)
    wf, net = load_superres_model(sr_model)
    cfg = wf.superres
    cases = evaluation_cases(seg_model.parent / "manifest.csv", sr_model.parent / "manifest.csv")
    work.mkdir(parents=True, exist_ok=True)
    segment = _segmenter(seg_model, work)
    t1, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    rows = []
    for case in cases.itertuples():
        thin = read_thin(wf, case.image)
        label = crop_to_multiple(np.asarray(load_image(case.label).data), cfg.axis, cfg.factor)
        rows.append({"case_key": case.case_key, **score_case(thin, label, net, cfg, segment)})
        print(
            f"{case.case_key}: " + " ".join(f"{c} {rows[-1][f'dice_mean_{c}']:.3f}" for c in CONDITIONS),
            flush=True,
        )
    per_case = pd.DataFrame(rows)
    per_case.to_csv(work / "per_case.csv", index=False)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "data": "MSD Hippocampus (1 mm T1 crops), 4x thick slices along axis 2 (box profile)",
        "cases": len(per_case),
        "first_last_case": [rows[0]["case_key"], rows[-1]["case_key"]],
        "models": {"segmentation": str(seg_model), "superres": str(sr_model), **trained},
        "dice_mean_ci95": summarise(per_case),
        "dice_per_label": {
            f"dice_{k}_{c}": round(float(per_case[f"dice_{k}_{c}"].mean()), 4)
            for k in LABELS
            for c in CONDITIONS
        },  # fmt: skip
        "segmentation_wall_s": round(time.perf_counter() - t1, 1),
        "segmentation_cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1),
        "total_wall_s": round(time.perf_counter() - t0, 1),
        "load_average": [round(load0, 1), round(os.getloadavg()[0], 1)],
        "cpu_count": os.cpu_count(),
    }


def save(result: dict[str, Any]) -> Path:
    """Write the result to ``benchmarks/results/superres-dice-<UTC time>.json`` (git-ignored)."""
    from benchmarks.common import save_result

    return save_result("superres-dice", result)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--epochs", type=int, default=40, help="super-resolution epochs when it is trained here"
    )
    parser.add_argument("--work", default=None, help="per-case table (default: in the cache)")
    args = parser.parse_args()
    result = measure(Path(args.work or CACHE / "bench-superres-dice"), args.epochs)
    print(json.dumps(result, indent=2))
    if "skipped" not in result:
        print(f"saved: {save(result)}")
