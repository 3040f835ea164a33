"""Self-configured studies on real scans vs the hand-written cached MONAI script, at one budget.

The question a researcher asks: with no hyperparameter set by hand, does ``medimg plan`` +
``medimg run`` give a better model in the same wall-clock time than the tutorial script they
would otherwise write? Each dataset is studied three times, one run at a time, on the same
fixed split:

* **script**: :mod:`benchmarks.baselines.monai_seg_script` / ``monai_cls_script`` (CacheDataset,
  residual UNet + DiceCE / DenseNet121 + cross-entropy, Adam), trained until the budget;
* **medimg**: ``medimg plan DATA --budget B`` and ``medimg run`` of the written workflow,
  unedited but for where MLflow and the outputs go;
* **medimg at half**: the same with half the budget (does medimg reach the script's quality
  in half the time?).

``--same-network`` (issue 24's equal-wall-clock row) replaces the medimg side: the planned
workflow with the script's network, patch and batch written over it (Hippocampus: residual UNet
16..256, 32^3 patches, 2 cases x 2 patches; VesselMNIST3D: the plan already names the script's
DenseNet121 at 64^3), everything else as planned; no half-budget run.

Datasets (public, never committed; ``prepare`` copies them from repository snapshots that the
``fetch`` tool brings to ``/work/.mirror``):

* MSD Task04 Hippocampus (``udacity/nd320-c3-3d-imaging-starter``, ``data/TrainingSet``): the
  fixed split of :func:`benchmarks.bench_explain.fixed_split` (last 20 % of sorted case names
  test, last 10 % of the rest validation); cases medimg's data checks refuse (the planted
  outliers, the unlabelled case) are left out with the checks' reason, never by hand;
* VesselMNIST3D at 64^3 (``KarenMazaDelgado/Aneurysm-3DCNN``, ``DATA SET/vesselmnist3d_64.npz``)
  with its published split (train/val/test 1335/191/382).

Reported per side: segmentation mean Dice per label; classification AUROC, balanced accuracy
and Brier score; each with a 95 % bootstrap CI over test cases, the paired difference
medimg - script with its CI, and the validation curve against elapsed seconds (the script's from its first training step,
after its cache is filled; medimg's from the start of its MLflow run, cache fill included, so
medimg's curve is the conservative one). The budget is training time on both sides
(``trainer.max_time`` for medimg; the script stops at the step where it is spent); each side's
whole wall-clock time, caching and test scoring included, is reported beside it.

Run: ``python -m benchmarks.bench_study_real prepare`` once, then
``python -m benchmarks.bench_study_real run --budget 20m`` (about 2 h: 2 datasets x 2.5
budgets). ``--quick`` runs a subset of cases at a 90 s budget to check the harness.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = Path.home() / ".cache/medimg-data"
HIPPO = DATA / "hippocampus"
VESSEL = DATA / "vesselmnist3d_64"
WORK = DATA / "study_real"
N_BOOT = 2000
# The goals of issue 19: medimg - script at the same budget, and the best VesselMNIST3D test AUC of the
# MedMNIST v2 benchmark table (Yang et al., "MedMNIST v2", Scientific Data 10:41, 2023, 3D table:
# ResNet-18 + ACS convolutions, AUC 0.930; its ResNet-18 (3D) row, 0.874, is cross-checked by a second
# public source, the rest of the table as read from the paper).
GOAL_DIFF = {"dice_mean": 0.02, "auroc": 0.03}
MEDMNIST_V2_BEST_VESSEL_AUC = 0.930


def not_prepared() -> str | None:
    """Why the benchmark cannot run here (``None`` when both datasets are in the cache)."""
    missing = [str(p) for p in (HIPPO / "images", VESSEL / "manifest.csv") if not p.exists()]
    if missing:
        return (
            f"real data not prepared ({', '.join(missing)} missing): run "
            "`python -m benchmarks.bench_study_real prepare` with snapshots of "
            "udacity/nd320-c3-3d-imaging-starter and KarenMazaDelgado/Aneurysm-3DCNN in /work/.mirror"
        )
    return None


def prepare() -> dict[str, Any]:
    from benchmarks import bench_explain, bench_explain_vessel

    out: dict[str, Any] = {}
    if not (HIPPO / "images").is_dir():
        out["hippocampus"] = bench_explain.prepare()
    if not (VESSEL / "manifest.csv").is_file():
        out["vesselmnist3d_64"] = bench_explain_vessel.prepare(cache=VESSEL, size=64)
    return out


def parse_budget(text: str) -> float:
    """Seconds in ``90s`` / ``20m`` / ``2h``.

    Example:
        >>> parse_budget("20m"), parse_budget("90s")
        (1200.0, 90.0)
    """
    unit = {"s": 1, "m": 60, "h": 3600}[text[-1]]
    return float(text[:-1]) * unit


# --- manifests ---------------------------------------------------------------------------------


def _subset(df: pd.DataFrame, counts: dict[str, int], stratify: str | None = None) -> pd.DataFrame:
    parts = []
    for split, n in counts.items():
        rows = df[df.split == split]
        if stratify:  # keep both classes: half positives where there are enough
            pos, neg = rows[rows[stratify] == 1], rows[rows[stratify] == 0]
            k = min(len(pos), n // 4 + 1)
            parts += [pos.head(k), neg.head(n - k)]
        else:
            parts.append(rows.head(n))
    return pd.concat(parts)


def hippocampus_manifest(work: Path, quick: bool) -> tuple[Path, dict[str, str]]:
    from benchmarks.bench_explain import checked_manifest

    manifest, _split, refused = checked_manifest(HIPPO, work)
    if quick:
        df = _subset(pd.read_csv(manifest), {"train": 24, "val": 4, "test": 8})
        df.to_csv(manifest, index=False)
    return manifest, refused


def vessel_manifest(work: Path, quick: bool) -> Path:
    df = pd.read_csv(VESSEL / "manifest.csv")
    df["image"] = [str(VESSEL / p) for p in df.image]
    if quick:
        df = _subset(df, {"train": 96, "val": 24, "test": 48}, stratify="aneurysm")
    work.mkdir(parents=True, exist_ok=True)
    df.to_csv(work / "manifest.csv", index=False)
    return work / "manifest.csv"


# --- the two sides -----------------------------------------------------------------------------


def _timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True)
    return time.perf_counter() - t0


def run_script(task: str, manifest: Path, budget_s: float, work: Path) -> dict[str, Any]:
    out = work / "script.json"
    module = "monai_seg_script" if task == "segmentation" else "monai_cls_script"
    extra = [] if task == "segmentation" else ["--target", "aneurysm"]
    cmd = [sys.executable, "-m", f"benchmarks.baselines.{module}", str(manifest), *extra]
    wall = _timed([*cmd, "--budget-s", str(budget_s), "--out", str(out)], ROOT)
    result = json.loads(out.read_text())
    result["wall_s"] = round(wall, 1)
    return result


SCRIPT_NETWORK = {  # the seg script's defaults (benchmarks/baselines/monai_seg_script.py), as workflow keys
    "model": {
        "name": "unet",
        "params": {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2},
    },
    "augmentation": {"patch_size": [32, 32, 32], "samples_per_volume": 2},
    "optim": {"batch_size": 2},
}


def with_script_network(text: str) -> str:
    """The planned workflow YAML with :data:`SCRIPT_NETWORK` written over it (the plan's comments are dropped; a first line says what changed)."""
    import yaml

    wf = yaml.safe_load(text)
    for section, values in SCRIPT_NETWORK.items():  # the model whole (the plan's params are DynUNet's)
        wf[section] = values if section == "model" else {**wf[section], **values}
    note = "# the planned workflow with the script's network, patch and batch (bench_study_real --same-network)\n"
    return note + yaml.safe_dump(wf, sort_keys=False)


def run_medimg(
    task: str,
    manifest: Path,
    budget_s: float,
    work: Path,
    name: str,
    edit: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """``medimg plan`` then ``medimg run``; the workflow is the plan's, only tracking/outputs added.

    ``edit`` rewrites the planned YAML text before the run (``with_script_network``: the script's
    network, patch and batch written over the plan).
    """
    wf = work / f"{name}.yaml"
    plan = [sys.executable, "-m", "medimg", "plan", str(manifest), "--task", task, "--out", str(wf)]
    plan += ["--budget", f"{int(budget_s)}s", "--json"]
    if task == "classification":
        plan += ["--label-column", "aneurysm"]
    plan_s = _timed(plan, work)
    text = wf.read_text().replace('dir: "runs/', f'dir: "{work}/runs/')
    text += f'tracking:\n  uri: "sqlite:///{work}/mlflow.db"\n  experiment: "{name}"\n'
    if edit is not None:
        text = edit(text)
    wf.write_text(text)
    run_s = _timed([sys.executable, "-m", "medimg", "run", str(wf)], work)
    out = next((work / "runs").glob(f"{wf.stem}*/test_per_case.csv")).parent
    info = json.loads((out / "run.json").read_text())
    return {
        "plan_s": round(plan_s, 1),
        "wall_s": round(run_s, 1),
        "workflow": str(wf),
        "out": str(out),
        "curve": validation_curve(info["tracking_uri"], info["run_id"], task),
        "per_case": str(out / "test_per_case.csv"),
    }


def validation_curve(uri: str, run_id: str, task: str) -> list[tuple[float, float]]:
    """``[(seconds since the run started, validation metric), ...]`` from the run's MLflow history."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    start = client.get_run(run_id).info.start_time
    key = "val_dice" if task == "segmentation" else "val_auroc"
    history = client.get_metric_history(run_id, key)
    return [(round((m.timestamp - start) / 1000, 1), round(m.value, 4)) for m in history]


# --- scoring -----------------------------------------------------------------------------------


def _ci(frame: pd.DataFrame, stat: Any) -> dict[str, dict[str, float]]:
    from medimg.evaluation.bootstrap import Resampling, bootstrap_ci

    return {k: v.to_dict() for k, v in bootstrap_ci(frame, stat, Resampling(None, n_boot=N_BOOT)).items()}


def score_segmentation(script: dict[str, Any], medimg_csv: str, labels: int = 2) -> dict[str, Any]:
    med = pd.read_csv(medimg_csv).set_index("case_key")
    cols = [f"dice_{k}" for k in range(1, labels + 1)]
    scr = pd.DataFrame.from_dict(script["test"], orient="index", columns=cols)
    common = sorted(set(med.index) & set(scr.index))
    frame = pd.DataFrame({"case": common})
    for c in cols:
        frame[f"medimg_{c}"] = med.loc[common, c].to_numpy(float)
        frame[f"script_{c}"] = scr.loc[common, c].to_numpy(float)
        frame[f"diff_{c}"] = frame[f"medimg_{c}"] - frame[f"script_{c}"]
    for side in ("medimg", "script", "diff"):
        frame[f"{side}_dice_mean"] = frame[[f"{side}_{c}" for c in cols]].mean(axis=1)
    return {"n_test": len(common), "metrics": _ci(frame, [c for c in frame.columns if c != "case"])}


def _cls_stats(prefix: str) -> Any:
    from medimg.evaluation.cls_metrics import auroc

    def stat(f: pd.DataFrame) -> dict[str, float]:
        y, p, pred = f.y.to_numpy(int), f[f"{prefix}_p"].to_numpy(float), f[f"{prefix}_pred"].to_numpy(int)
        sens = float((pred[y == 1] == 1).mean()) if (y == 1).any() else float("nan")
        spec = float((pred[y == 0] == 0).mean()) if (y == 0).any() else float("nan")
        return {
            f"{prefix}_auroc": auroc(y, p),
            f"{prefix}_balanced_accuracy": (sens + spec) / 2,
            f"{prefix}_brier": float(np.mean((p - y) ** 2)),
        }

    return stat


def score_classification(script: dict[str, Any], medimg_csv: str) -> dict[str, Any]:
    med = pd.read_csv(medimg_csv).set_index("case_key")
    scr = pd.DataFrame.from_dict(script["test"], orient="index")
    common = sorted(set(med.index) & set(scr.index))
    frame = pd.DataFrame(
        {
            "y": scr.loc[common, "label"].to_numpy(int),
            "medimg_p": med.loc[common, "prob_1"].to_numpy(float),
            "medimg_pred": med.loc[common, "prediction"].to_numpy(int),
            "script_p": scr.loc[common, "p"].to_numpy(float),
        }
    )
    frame["script_pred"] = (frame.script_p >= 0.5).astype(int)  # the script's argmax
    med_stat, scr_stat = _cls_stats("medimg"), _cls_stats("script")

    def both(f: pd.DataFrame) -> dict[str, float]:
        m, s = med_stat(f), scr_stat(f)
        return {**m, **s, "diff_auroc": m["medimg_auroc"] - s["script_auroc"]}

    return {"n_test": len(common), "n_pos": int(frame.y.sum()), "metrics": _ci(frame, both)}


# --- the benchmark -----------------------------------------------------------------------------


def study(
    dataset: str, budget_s: float, quick: bool, half: bool = True, same_network: bool = False
) -> dict[str, Any]:
    work = WORK / ("quick" if quick else f"{int(budget_s)}s") / dataset
    work.mkdir(parents=True, exist_ok=True)
    task = "segmentation" if dataset == "hippocampus" else "classification"
    refused: dict[str, str] = {}
    if dataset == "hippocampus":
        manifest, refused = hippocampus_manifest(work, quick)
    else:
        manifest = vessel_manifest(work, quick)
    result: dict[str, Any] = {"dataset": dataset, "task": task, "budget_s": budget_s, "refused": refused}
    result["script"] = run_script(task, manifest, budget_s, work)
    name = f"{dataset}_{'same_network' if same_network else 'full'}"
    edit = with_script_network if same_network and task == "segmentation" else None
    result["medimg"] = run_medimg(task, manifest, budget_s, work, name, edit)
    result["same_network"] = same_network
    half = half and not same_network
    if half:
        result["medimg_half"] = run_medimg(task, manifest, budget_s / 2, work, f"{dataset}_half")
    score = score_segmentation if task == "segmentation" else score_classification
    result["scores"] = score(result["script"], result["medimg"]["per_case"])
    if half:
        result["scores_half"] = score(result["script"], result["medimg_half"]["per_case"])
    result["script"].pop("test")  # per-case outputs stay in the work folder, not in the summary
    return result


def summary_rows(result: dict[str, Any]) -> list[str]:
    m = result["scores"]["metrics"]
    key = "dice_mean" if result["task"] == "segmentation" else "auroc"

    def fmt(name: str) -> str:
        v = m[name]
        return f"{v['estimate']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"

    same = result.get("same_network", False)
    rows = [
        f"{result['dataset']}: budget {result['budget_s']:.0f} s, {result['scores']['n_test']} test cases"
        + (", medimg with the script's network, patch and batch" if same else ""),
        f"  script {key}: {fmt('script_' + key)}",
        f"  medimg {key}: {fmt('medimg_' + key)}",
        f"  medimg - script: {fmt('diff_' + key)}",
    ]
    diff = m["diff_" + key]["estimate"]
    # issue 24: with the same network at least as good; issue 19: better by a margin
    goal = 0.0 if same else GOAL_DIFF[key]
    rows.append(f"  goal medimg - script >= {goal:.2f}: {'met' if diff >= goal else 'NOT met'}")
    if result["dataset"] == "vessel":
        got = m["medimg_auroc"]["estimate"]
        verdict = "met" if got >= MEDMNIST_V2_BEST_VESSEL_AUC else "NOT met"
        rows.append(f"  goal medimg auroc >= {MEDMNIST_V2_BEST_VESSEL_AUC:.3f} (MedMNIST v2 best): {verdict}")
    if "scores_half" in result:
        h = result["scores_half"]["metrics"][f"medimg_{key}"]
        rows.append(f"  medimg at half the budget: {h['estimate']:.3f} [{h['low']:.3f}, {h['high']:.3f}]")
        script = m["script_" + key]["estimate"]
        verdict = "met" if h["estimate"] >= script else "NOT met"
        rows.append(f"  goal medimg at half the budget >= script at the full budget: {verdict}")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("prepare", "run"))
    p.add_argument("--budget", default="20m", help="wall-clock training budget per side (90s, 20m, 2h)")
    p.add_argument("--dataset", choices=("hippocampus", "vessel"), action="append")
    p.add_argument("--quick", action="store_true", help="a subset of cases at a 90 s budget")
    p.add_argument("--no-half", action="store_true", help="skip the half-budget medimg run")
    p.add_argument(
        "--same-network", action="store_true", help="medimg with the script's network, patch and batch"
    )
    a = p.parse_args(argv)
    if a.action == "prepare":
        print(json.dumps(prepare(), indent=1))
        return 0
    reason = not_prepared()
    if reason:
        print(f"skipped: {reason}")
        return 0
    budget_s = 90.0 if a.quick else parse_budget(a.budget)
    results = [
        study(d, budget_s, a.quick, half=not a.no_half, same_network=a.same_network)
        for d in a.dataset or ("hippocampus", "vessel")
    ]
    from benchmarks.common import machine

    doc = {"benchmark": "study_real", "machine": machine(), "quick": a.quick, "studies": results}
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = ROOT / "benchmarks/results" / f"study_real-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    for r in results:
        print("\n".join(summary_rows(r)))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
