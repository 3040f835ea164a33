"""Does adding generated cases of the rare class help a classifier trained on few real cases?

VesselMNIST3D (MedMNIST v2, 28^3 segments of real brain CTA vessels; class 1 = aneurysm, about
11 % of cases). Fixed before anything runs: a small imbalanced training subset (``--train``
real cases drawn at random, seed 0, from the published training split), the published
validation split (best checkpoint) and the published **test** split (every score). Then:

1. one ``task: synthesis`` study (a class-conditional VAE, :mod:`medimg.models.cvae`) on
   the subset's training cases only;
2. for each seed, the same classification workflow twice: on the real subset only, and with
   ``data.synthetic_cases: {generator: <its run>, class_index: 1, count: --count}`` added to the
   training split. Both see the same number of optimiser steps (``trainer.limit_train_batches``
   is the real subset's batches per epoch) and epochs; validation and test are real in both.

Reported: test AUROC and average precision of every run, the paired difference (synthetic -
real) per seed, its mean with a 95 % t-interval across seeds, and a 95 % bootstrap interval
over test cases (the same resamples for both arms, the difference averaged over seeds).

Run: ``python -m benchmarks.bench_explain prepare-vessel`` once (the prepared cache), then
``python -m benchmarks.bench_synth_aug`` (about 20-30 minutes on two shared CPU cores).
``--synthetic`` runs the whole harness on a tiny synthetic study instead (CI's smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache/medimg-data/vesselmnist3d"
N_BOOT = 2000


@dataclass
class Setup:
    """Everything the benchmark fixes before it runs (recorded in the results)."""

    manifest: str  # with a split column: train / val / test
    label_column: str = "aneurysm"
    n_train: int = 200  # real training cases, drawn from the manifest's training split
    n_val: int | None = None  # validation cases (None: the whole validation split)
    count: int = 60  # synthetic class-1 cases added in the "synthetic" arm
    seeds: tuple[int, ...] = (0, 1, 2)
    size: int = 28
    spacing: float = 1.0
    intensity: dict[str, Any] = field(default_factory=lambda: {"mode": "minmax"})
    epochs: int = 10
    batch_size: int = 16
    gen_epochs: int = 10
    gen_channels: tuple[int, int] = (16, 32)
    gen_latent: int = 32
    cls_channels: tuple[int, ...] = (16, 32, 32, 32)
    cls_pools: tuple[int, ...] = (1, 2)
    subset_seed: int = 0
    n_boot: int = N_BOOT


def not_prepared(cache: Path = CACHE) -> str | None:
    """Why the real-data benchmark cannot run (``None`` when the prepared cache is there)."""
    from benchmarks.bench_explain_vessel import vessel_not_prepared

    detail = (
        "(VesselMNIST3D 28^3 from a snapshot of KarenMazaDelgado/Aneurysm-3DCNN), "
        "then rerun `python -m benchmarks.bench_synth_aug`"
    )
    return vessel_not_prepared(cache, detail)


def fix_subset(setup: Setup, work: Path) -> Path:
    """The fixed study manifest: ``n_train`` random training cases, validation and test as published."""
    from medimg.io.csvsafe import read_csv_unescaped

    src = Path(setup.manifest)
    df = read_csv_unescaped(src, dtype={"patient_key": str})
    root = src.parent
    df["image"] = [str(p if Path(p).is_absolute() else (root / p).resolve()) for p in df["image"]]
    rng = np.random.default_rng(setup.subset_seed)
    train = df[df["split"] == "train"]
    if len(train) < setup.n_train:
        raise SystemExit(f"{src}: {len(train)} training cases, fewer than --train {setup.n_train}")
    pick = np.sort(rng.choice(len(train), setup.n_train, replace=False))
    val = df[df["split"] == "val"]
    if setup.n_val is not None:
        val = val.iloc[np.sort(rng.choice(len(val), min(setup.n_val, len(val)), replace=False))]
    out = pd.concat([train.iloc[pick], val, df[df["split"] == "test"]], ignore_index=True)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "study_manifest.csv"
    out.to_csv(path, index=False)
    return path


def _common(setup: Setup, manifest: Path, work: Path, name: str, seed: int) -> dict[str, Any]:
    s = setup.size
    return {
        "name": name,
        "seed": seed,
        "data": {"manifest": str(manifest), "label_column": setup.label_column, "num_classes": 2},
        "preprocessing": {
            "orientation": "RAS",
            "spacing": [setup.spacing] * 3,
            "intensity": setup.intensity,
            "spatial_size": [s, s, s],
            "cache": {"mode": "memory"},
        },  # fmt: skip
        "tracking": {"uri": f"sqlite:///{work}/mlflow.db", "experiment": "synth_aug"},
        "outputs": {"dir": str(work / "runs" / name)},
    }


def generator_workflow(setup: Setup, manifest: Path, work: Path) -> Any:
    """The ``task: synthesis`` workflow: the conditional VAE on the subset's training split."""
    from medimg.config.generative import GenerativeWorkflow

    return GenerativeWorkflow.model_validate(
        {**_common(setup, manifest, work, "generator", 0), "task": "synthesis",
         "synthesis": {"channels": list(setup.gen_channels), "latent_dim": setup.gen_latent, "samples_per_class": 0},
         "optim": {"lr": 0.002, "batch_size": setup.batch_size}, "trainer": {"max_epochs": setup.gen_epochs}}
    )  # fmt: skip


def train_generator(setup: Setup, manifest: Path, work: Path) -> dict[str, Any]:
    """Train the generator (or reuse the one finished in ``work``); its run id, sha256 and time."""
    from medimg.config.load import workflow_to_yaml
    from medimg.generative.run import run_generative

    wf = generator_workflow(setup, manifest, work)
    t0, out = time.perf_counter(), Path(wf.outputs.dir)
    if _finished(out, wf) and (out / "model/model.json").is_file():
        info, reused = json.loads((out / "model/model.json").read_text()), True
        metrics = json.loads((out / "bench_metrics.json").read_text())
    else:
        res = run_generative(wf)
        info, reused, metrics = json.loads((res.out_dir / "model/model.json").read_text()), False, res.metrics
        (out / "bench_metrics.json").write_text(
            json.dumps({**metrics, "bench_seconds": time.perf_counter() - t0})
        )
        (out / "bench_workflow.yaml").write_text(workflow_to_yaml(wf))
    return {"run_id": info["run_id"], "sha256": info["weights_sha256"], "seconds": metrics.get("bench_seconds"),
            "reused": reused, "metrics": metrics, "train_cases_per_class": info["train_cases_per_class"]}  # fmt: skip


def _finished(out: Path, wf: Any) -> bool:
    """A run of ``wf`` finished in ``out`` before (a rerun of the benchmark in the same ``--work`` reuses it)."""
    from medimg.config.load import workflow_to_yaml

    info = out / "run.json"
    if not (info.is_file() and (out / "bench_workflow.yaml").is_file()):
        return False
    same = (out / "bench_workflow.yaml").read_text() == workflow_to_yaml(wf)
    return same and json.loads(info.read_text()).get("status") == "finished"


def classifier(setup: Setup, manifest: Path, work: Path, seed: int, synthetic: dict[str, Any] | None) -> Any:
    """The classification workflow of one arm and seed (the same but for ``data.synthetic_cases``)."""
    from medimg.config.schema import Workflow

    arm = "synthetic" if synthetic else "real"
    steps = int(np.ceil(setup.n_train / setup.batch_size))  # the real subset's batches per epoch, both arms
    raw = _common(setup, manifest, work, f"cls_{arm}_seed{seed}", seed)
    if synthetic:
        raw["data"]["synthetic_cases"] = synthetic
    raw.update({
        "task": "classification",
        "augmentation": {"patch_size": None, "flip_prob": 0.5, "intensity": {"prob": 0.0}},
        "model": {"name": "patchnet", "params": {"channels": list(setup.cls_channels), "pools": list(setup.cls_pools),
                                                 "input_range": [0.0, 1.0]}},
        "optim": {"optimizer": "adamw", "lr": 0.003, "batch_size": setup.batch_size, "scheduler": "cosine"},
        "trainer": {"max_epochs": setup.epochs, "accelerator": "cpu", "val_every_n_epochs": 1,
                    "limit_train_batches": steps},
    })  # fmt: skip
    return Workflow.model_validate(raw)


def run_arm(wf: Any) -> dict[str, Any]:
    """Train and score one workflow; its test labels and probabilities, and what its training split held."""
    from medimg.config.load import workflow_to_yaml
    from medimg.evaluation.cls_metrics import probabilities_from_frame
    from medimg.training.run import run_workflow

    t0, out = time.perf_counter(), Path(wf.outputs.dir)
    asked = workflow_to_yaml(wf)  # before the run fills in the generator's run id and sha256
    reused = _finished(out, wf)
    if reused:
        run_id, seconds = (
            json.loads((out / "run.json").read_text())["run_id"],
            float((out / "bench_seconds").read_text()),
        )
    else:
        res = run_workflow(wf)
        run_id, seconds = res.run_id, time.perf_counter() - t0
        (out / "bench_seconds").write_text(str(seconds))
        (out / "bench_workflow.yaml").write_text(asked)
    per_case = pd.read_csv(out / "test_per_case.csv").sort_values("case_key")
    y, p = probabilities_from_frame(per_case)
    saved = pd.read_csv(out / "manifest.csv")
    synth = saved["synthetic"].astype(bool) if "synthetic" in saved else pd.Series(False, index=saved.index)
    return {"run_id": run_id, "seconds": seconds, "reused": reused, "case_key": per_case["case_key"].tolist(),
            "y": y.astype(int).tolist(), "p": np.asarray(p, float).tolist(),
            "train_real": int(((saved["split"] == "train") & ~synth).sum()),
            "train_synthetic": int(((saved["split"] == "train") & synth).sum()),
            "eval_synthetic": int((saved["split"].isin(["val", "test"]) & synth).sum())}  # fmt: skip


def _metrics(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    from medimg.evaluation.cls_metrics import auprc, auroc

    return auroc(y, p), auprc(y, p)


def t_interval(diffs: list[float], level: float = 0.95) -> dict[str, float]:
    """Mean of ``diffs`` with its t-interval (n - 1 degrees of freedom).

    Example:
        >>> ci = t_interval([0.01, 0.03, 0.02])
        >>> round(ci["mean"], 3), round(ci["low"], 4), round(ci["high"], 4)
        (0.02, -0.0048, 0.0448)
    """
    from scipy import stats

    d = np.asarray(diffs, float)
    half = stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return {"mean": float(d.mean()), "sd": float(d.std(ddof=1)), "low": float(d.mean() - half),
            "high": float(d.mean() + half), "n": len(d)}  # fmt: skip


def bootstrap_diff(
    y: np.ndarray, real: np.ndarray, synth: np.ndarray, n_boot: int = N_BOOT
) -> dict[str, Any]:
    """95 % percentile intervals over test-case resamples of the seed-mean difference (synthetic - real).

    ``real`` and ``synth`` are ``(seeds, cases)`` probabilities on the same cases ``y``; every
    replicate resamples the cases once for all runs. Replicates without both classes are drawn again.
    """
    rng = np.random.default_rng(12345)
    out: dict[str, list[float]] = {"auroc": [], "ap": []}
    while len(out["auroc"]) < n_boot:
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() == y[idx].max():
            continue
        pairs = [
            (_metrics(y[idx], s[idx]), _metrics(y[idx], r[idx])) for s, r in zip(synth, real, strict=True)
        ]
        out["auroc"].append(float(np.mean([s[0] - r[0] for s, r in pairs])))
        out["ap"].append(float(np.mean([s[1] - r[1] for s, r in pairs])))
    return {k: {"low": float(np.percentile(v, 2.5)), "high": float(np.percentile(v, 97.5)), "n_boot": n_boot}
            for k, v in out.items()}  # fmt: skip


def summarise(runs: dict[int, dict[str, dict[str, Any]]], n_boot: int = N_BOOT) -> dict[str, Any]:
    """Per seed AUROC/AP of both arms and their differences; t-intervals across seeds; bootstrap over cases."""
    seeds = sorted(runs)
    y = np.asarray(runs[seeds[0]]["real"]["y"])
    for s in seeds:
        if runs[s]["synthetic"]["case_key"] != runs[seeds[0]]["real"]["case_key"]:
            raise RuntimeError(f"seed {s}: the two arms were tested on different cases")
    table = []
    for s in seeds:
        (ar, pr), (asy, psy) = (_metrics(y, np.asarray(runs[s][a]["p"])) for a in ("real", "synthetic"))
        table.append({"seed": s, "auroc_real": ar, "auroc_synthetic": asy, "auroc_diff": asy - ar,
                      "ap_real": pr, "ap_synthetic": psy, "ap_diff": psy - pr})  # fmt: skip
    real = np.asarray([runs[s]["real"]["p"] for s in seeds])
    synth = np.asarray([runs[s]["synthetic"]["p"] for s in seeds])
    return {
        "per_seed": table,
        "n_test": len(y),
        "n_test_positive": int(y.sum()),
        "auroc_diff_t95": t_interval([r["auroc_diff"] for r in table]),
        "ap_diff_t95": t_interval([r["ap_diff"] for r in table]),
        "bootstrap95_over_test_cases": bootstrap_diff(y, real, synth, n_boot),
        "mean_auroc": {a: float(np.mean([r[f"auroc_{a}"] for r in table])) for a in ("real", "synthetic")},
        "mean_ap": {a: float(np.mean([r[f"ap_{a}"] for r in table])) for a in ("real", "synthetic")},
    }


def run(setup: Setup, work: Path) -> dict[str, Any]:
    """The whole benchmark in ``work``; the results document."""
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    manifest = fix_subset(setup, work)
    study = pd.read_csv(manifest)
    counts = {sp: {"cases": int((study["split"] == sp).sum()),
                   "positive": int(study.loc[study["split"] == sp, setup.label_column].sum())}
              for sp in ("train", "val", "test")}  # fmt: skip
    gen = train_generator(setup, manifest, work)
    runs: dict[int, dict[str, dict[str, Any]]] = {}
    for seed in setup.seeds:
        synth = {"generator": gen["run_id"], "class_index": 1, "count": setup.count,
                 "cache_dir": str(work / "synthetic_cache")}  # fmt: skip
        runs[seed] = {arm: run_arm(classifier(setup, manifest, work, seed, cfg))
                      for arm, cfg in (("real", None), ("synthetic", synth))}  # fmt: skip
    return {
        "benchmark": "synth_aug",
        "when_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "setup": asdict(setup),
        "study_counts": counts,
        "generator": gen,
        "runs": {
            str(s): {
                a: {k: v for k, v in r.items() if k not in ("y", "p", "case_key")} for a, r in arms.items()
            }
            for s, arms in runs.items()
        },  # fmt: skip
        "result": summarise(runs, setup.n_boot),
        "wall_seconds": time.perf_counter() - t0,
        "load_average": [load0, os.getloadavg()[0]],
        "machine": f"{os.cpu_count()} CPUs, torch threads {_threads()}",
    }


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def synthetic_setup(work: Path) -> Setup:
    """A tiny synthetic study (lesion = class 1, made rare in training) for CI's smoke test."""
    from medimg.data.synthetic import SyntheticGrid, write_synthetic_study

    src = write_synthetic_study(
        work / "data", cases=28, seed=5, grid=SyntheticGrid(shape=(24, 24, 16), spacing=(2.0, 2.0, 3.0))
    )
    df = pd.read_csv(src)
    pos, neg = df[df["class"] == 1].index, df[df["class"] == 0].index
    split = pd.Series("test", index=df.index)
    split[neg[:8]], split[pos[:2]] = "train", "train"  # 10 training cases, 2 of class 1
    split[neg[8:10]], split[pos[2:4]] = "val", "val"
    df["split"], df["patient_key"] = split, df["case_key"]  # one case a patient: splits by case
    df.to_csv(src, index=False)
    return Setup(manifest=str(src), label_column="class", n_train=10, count=4, seeds=(0, 1, 2), size=16,
                 spacing=3.0, intensity={"mode": "ct_window", "window": [-200, 400]}, epochs=2, batch_size=4,
                 gen_epochs=2, n_boot=200, gen_channels=(4, 8), gen_latent=4, cls_channels=(4, 8, 8), cls_pools=(2,))  # fmt: skip


def table(doc: dict[str, Any]) -> str:
    """The result as a Markdown table (per seed, then the mean difference with both intervals)."""
    res = doc["result"]
    lines = ["| seed | AUROC real | AUROC + synthetic | diff | AP real | AP + synthetic | diff |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in res["per_seed"]:
        lines.append(f"| {r['seed']} | {r['auroc_real']:.3f} | {r['auroc_synthetic']:.3f} | {r['auroc_diff']:+.3f} "
                     f"| {r['ap_real']:.3f} | {r['ap_synthetic']:.3f} | {r['ap_diff']:+.3f} |")  # fmt: skip
    b = res["bootstrap95_over_test_cases"]
    for m, t in (("AUROC", res["auroc_diff_t95"]), ("AP", res["ap_diff_t95"])):
        bb = b["auroc" if m == "AUROC" else "ap"]
        lines.append(f"\nmean {m} difference {t['mean']:+.3f}; 95 % t-interval over {t['n']} seeds "
                     f"[{t['low']:+.3f}, {t['high']:+.3f}]; 95 % bootstrap over test cases [{bb['low']:+.3f}, {bb['high']:+.3f}]")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.bench_synth_aug [--synthetic] [--work DIR] [--out JSON]``."""
    ap = argparse.ArgumentParser(prog="bench_synth_aug", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--synthetic", action="store_true", help="a tiny synthetic study (smoke test, no cache needed)"
    )
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: under the data cache)")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default: benchmarks/results/)")
    ap.add_argument("--train", type=int, default=200, help="real training cases in the fixed subset")
    ap.add_argument("--count", type=int, default=60, help="synthetic aneurysm cases added")
    ap.add_argument("--seeds", type=int, default=3, help="seeds (>= 3 for a t-interval worth reading)")
    ap.add_argument("--epochs", type=int, default=10, help="classifier epochs (both arms)")
    ap.add_argument("--gen-epochs", type=int, default=10, help="generator epochs")
    ap.add_argument("--val", type=int, default=64, help="validation cases (drawn from the published split)")
    args = ap.parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    if args.synthetic:
        work = args.work or Path.cwd() / "runs/bench_synth_aug_smoke"
        setup = synthetic_setup(work)
    else:
        reason = not_prepared()
        if reason:
            print(reason)
            return 0
        work = args.work or CACHE.parent / "synth_aug" / stamp
        setup = Setup(manifest=str(CACHE / "manifest.csv"), n_train=args.train, count=args.count,
                      seeds=tuple(range(args.seeds)), epochs=args.epochs, gen_epochs=args.gen_epochs, n_val=args.val)  # fmt: skip
    doc = run(setup, work)
    out = (
        args.out
        or ROOT / "benchmarks/results" / f"synth_aug-{'synthetic-' if args.synthetic else ''}{stamp}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    print(table(doc))
    print(f"\n{doc['wall_seconds']:.0f} s; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
