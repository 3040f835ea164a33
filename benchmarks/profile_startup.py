"""Time from ``medimg run`` to the first training step, stage by stage, vs the script's caching (issue 24).

``python -m benchmarks.profile_startup [--cases 100 1000] [--size 32] [--rounds 2]`` writes, per case
count, that many small NIfTI volumes (classification, two classes), then times, in fresh processes
taken in turn (the order swapped every round):

- the hand-written script's start (the named baseline): a ``CacheDataset`` of LoadImaged,
  EnsureChannelFirstd, ScaleIntensityd, EnsureTyped over the training cases (and, as a second
  figure, over the validation cases too, which a script that validates also caches);
- medimg's :func:`~medimg.training.run.run_workflow` until Lightning starts the first training
  batch, each stage timed (prepare, plan, track, build, fit), on a fresh SQLite MLflow store; and
  how long the lineage, which is recorded in a thread beside the first steps, took;
- the same with the lineage recorded in the track stage (``medimg_sequential``: no start-up
  thread), the before-and-after in one run;
- medimg again on a store an earlier run created (``medimg_existing_store``: no schema to create,
  as for every run after a study folder's first);
- medimg with MLflow's migrations run on the new store (``medimg_no_template``: the store not
  copied from the schema template of :func:`medimg.training.tracking.seed_new_store`), as before
  the template;
- medimg with the store also opened in a thread beside the plan stage's caching
  (``medimg_store_thread``, as before that thread was dropped);
- medimg caching as before the no-op skips (``medimg_monai_cache``): MONAI's ``Orientationd`` and
  ``ResizeWithPadOrCropd`` applied to cases already in the target orientation and size, and the
  cache filled by a thread per core (:func:`medimg.data.threads.cache_fill_threads` not used).
  ``--kinds`` runs some variants only.

The schema template is made (once per installed MLflow, in medimg's cache) before any process is
timed; each process reports its wall and its CPU time (``time.process_time``: both cores count).

Each process imports lightning, ``monai.data`` and ``monai.transforms`` before its clock starts
(importing MONAI imports ``mlflow`` itself); MLflow's SQLite store, its migrations and medimg's own
modules are medimg's start-up. Prints one JSON line per process, then a summary: per case count and
kind, the median start-up (wall and CPU), the script's median caching, their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

KINDS = (
    "script",
    "medimg",
    "medimg_sequential",
    "medimg_existing_store",
    "medimg_no_template",
    "medimg_store_thread",
    "medimg_monai_cache",
)
SEQUENTIAL, EXISTING, NO_TEMPLATE, STORE_THREAD, MONAI_CACHE = KINDS[2:7]


class FirstStep(Exception):
    """Raised at the first training batch: the start-up is over."""


def write_study(root: Path, cases: int, size: int) -> Path:
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = ["case_key,patient_key,image,label"]
    for i in range(cases):
        img = rng.normal(0, 1, (size,) * 3).astype(np.float32) + (i % 2)
        nib.save(nib.Nifti1Image(img, np.eye(4)), root / f"images/c{i:05d}.nii.gz")
        rows.append(f"c{i:05d},p{i:05d},images/c{i:05d}.nii.gz,{i % 2}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


def workflow(manifest: Path, size: int, work: Path) -> Any:
    """The classification study medimg runs (ResNet-10, batch 8, one epoch, a fresh store in ``work``)."""
    from benchmarks.common import one_epoch_workflow

    return one_epoch_workflow(
        "profile_startup",
        "startup",
        "classification",
        {"manifest": str(manifest), "label_column": "label", "num_classes": 2},
        {"spacing": None, "intensity": {"mode": "minmax"}, "spatial_size": [size] * 3},
        augmentation={"patch_size": None},
        model={"name": "resnet10"},
        optim={"batch_size": 8},
        tracking={"uri": f"sqlite:///{work}/mlflow.db", "experiment": "startup"},
        outputs={"dir": f"{work}/out"},
    )


def script_child(manifest: Path, size: int, work: Path) -> dict[str, Any]:
    """The script's caching of the training cases (then of the validation cases), on medimg's split."""
    from monai import transforms as T
    from monai.data import CacheDataset

    from medimg.training.stages.prepare import prepare

    df = prepare(workflow(manifest, size, work)).df  # the same split medimg trains on (not timed)
    load = T.Compose(
        [T.LoadImaged(keys="image"), T.EnsureChannelFirstd(keys="image"),
         T.ScaleIntensityd(keys="image"), T.EnsureTyped(keys="image")]
    )  # fmt: skip
    out: dict[str, Any] = {}
    for split in ("train", "val"):
        rows = df[df.split == split]
        items = [{"image": str(i), "label": int(c)} for i, c in zip(rows.image, rows.target, strict=True)]
        t0, c0 = time.perf_counter(), time.process_time()
        CacheDataset(items, load, cache_rate=1.0, num_workers=0, progress=False)
        out[f"script_cache_{split}_s"] = round(time.perf_counter() - t0, 3)
        out[f"script_cache_{split}_cpu_s"] = round(time.process_time() - c0, 3)
        out[f"{split}_cases"] = len(items)
    return out


def medimg_child(
    manifest: Path,
    size: int,
    work: Path,
    sequential: bool = False,
    template: bool = True,
    store_thread: bool = False,
    monai_cache: bool = False,
) -> dict[str, Any]:
    """``run_workflow`` until the first training batch, each stage timed through the names it calls.

    ``sequential`` is medimg without the start-up thread, for comparison in the same run: the
    lineage recorded in the track stage before the model is built.
    ``template=False``: MLflow runs its migrations on the new store (no schema template).
    ``store_thread``: the store also opened in a thread beside the plan stage (the lineage in its own).
    ``monai_cache``: the caching as before the no-op skips (MONAI's transforms, a thread per core).
    """
    import lightning.pytorch as pl
    from monai import transforms as T  # noqa: F401  (imported before the clock, as the script does)
    from monai.data import CacheDataset  # noqa: F401

    import medimg.training.run as run_mod
    from medimg.training.stages.track_background import Background

    if not template:
        import medimg.training.tracking as tracking_mod

        tracking_mod.seed_new_store = lambda db: False  # type: ignore[assignment]
    if store_thread:
        from medimg.training.tracking import open_store

        run_mod.warm_store = lambda uri: Background("opening the store", lambda: open_store(uri))  # type: ignore[assignment]
    if monai_cache:
        from monai import transforms as mt

        import medimg.data.datasets as datasets_mod
        import medimg.data.transforms as transforms_mod

        transforms_mod.Orientd = mt.Orientationd  # type: ignore[misc]
        transforms_mod.ResizeToSized = mt.ResizeWithPadOrCropd  # type: ignore[misc]
        datasets_mod.cache_fill_threads = lambda requested, cores=None: requested or None  # type: ignore[assignment]
    if sequential:
        track = run_mod.track
        run_mod.track = lambda *args, **kw: track(*args, **{**kw, "background": False})  # type: ignore[assignment]

    wf = workflow(manifest, size, work)
    times: dict[str, float] = {}
    seen: dict[str, Any] = {}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                result = seen[name] = fn(*args, **kwargs)
                return result
            finally:
                times[name] = round(times.get(name, 0.0) + time.perf_counter() - t0, 3)

        return wrapper

    for name in ("prepare", "warm_store", "plan_study", "track", "build", "fit"):
        setattr(run_mod, name, timed(name, getattr(run_mod, name)))

    class Stop(pl.Callback):
        def on_train_batch_start(self, *args: Any) -> None:
            seen["first_step"] = time.perf_counter()
            seen["first_step_cpu"] = time.process_time()
            run = seen["track"]
            seen["lineage_done_at_first_step"] = run.lineage is None or run.lineage.done
            raise FirstStep

    t0, c0 = time.perf_counter(), time.process_time()
    try:
        run_mod.run_workflow(wf, callbacks=[Stop()])
    except Exception as exc:  # fit re-raises after marking the run FAILED (the stop is no failure)
        if "first_step" not in seen:
            raise RuntimeError("the study stopped before its first training step") from exc
    times.pop("fit", None)  # it ended at the stop: timed below up to the first batch
    fit_start = t0 + sum(times.values())
    run = seen["track"]
    return {
        "medimg_s": times | {"fit until the first batch": round(seen["first_step"] - fit_start, 3)},
        "medimg_first_step_s": round(seen["first_step"] - t0, 3),
        "medimg_first_step_cpu_s": round(seen["first_step_cpu"] - c0, 3),
        "warm_store_s (thread, beside plan)": round(seen["warm_store"].seconds or 0.0, 3),
        "lineage_s (thread, beside fit)": round(run.lineage.seconds or 0.0, 3) if run.lineage else None,
        "lineage_done_at_first_step": seen["lineage_done_at_first_step"],
    }


def child(kind: str, manifest: Path, size: int) -> None:
    with tempfile.TemporaryDirectory(prefix="startup_run_") as work:
        load = [round(x, 2) for x in os.getloadavg()]
        if kind == "script":
            got = script_child(manifest, size, Path(work))
        else:
            if kind == EXISTING:  # a store an earlier run created (in another process: not imported here)
                code = f"from medimg.training.tracking import open_store; open_store('sqlite:///{work}/mlflow.db')"
                subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
            got = medimg_child(
                manifest,
                size,
                Path(work),
                sequential=kind == SEQUENTIAL,
                template=kind != NO_TEMPLATE,
                store_thread=kind == STORE_THREAD,
                monai_cache=kind == MONAI_CACHE,
            )
        print(json.dumps({"kind": kind, "load_avg": load, **got}), flush=True)


def run_child(kind: str, manifest: Path, size: int) -> dict[str, Any]:
    argv = [
        sys.executable,
        "-m",
        "benchmarks.profile_startup",
        "--child",
        kind,
        str(manifest),
        "--size",
        str(size),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    # Lightning's progress bar may share the line: the JSON starts at its '{"kind"'
    lines = [ln[ln.index('{"kind"') :] for ln in proc.stdout.splitlines() if '{"kind"' in ln]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} process failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def summarize(cases: int, got: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per kind, the median start-up (wall and CPU) and its ratio to the script's median caching."""
    med = statistics.median
    script = round(med(g["script_cache_train_s"] for g in got["script"]), 3)
    script_cpu = round(med(g["script_cache_train_cpu_s"] for g in got["script"]), 3)
    script_tv = med(g["script_cache_train_s"] + g["script_cache_val_s"] for g in got["script"])
    kinds = [k for k in got if k != "script"]
    first = {k: round(med(g["medimg_first_step_s"] for g in got[k]), 3) for k in kinds}
    cpu = {k: round(med(g["medimg_first_step_cpu_s"] for g in got[k]), 3) for k in kinds}
    return {
        "cases": cases,
        "train_cases": got["script"][0]["train_cases"],
        "script_cache_train_s": script,
        "first_step_s": first,
        "ratio (goal <= 2x)": {k: round(v / script, 2) for k, v in first.items()},
        "script_cache_train_cpu_s": script_cpu,
        "first_step_cpu_s": cpu,
        "cpu ratio": {k: round(v / script_cpu, 2) for k, v in cpu.items()},
        "script_cache_train_val_s": round(script_tv, 3),
        "load_avg": sorted({g["load_avg"][0] for k in got.values() for g in k}),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cases", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--kinds", nargs="+", choices=KINDS[1:], default=list(KINDS[1:]), help="medimg variants")
    p.add_argument("--child", nargs=2, metavar=("KIND", "MANIFEST"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        return child(a.child[0], Path(a.child[1]), a.size)
    kinds = ["script", *a.kinds]
    t0 = time.perf_counter()  # the schema template, made once per installed MLflow (not timed below)
    code = "from medimg.training.tracking import schema_template; print(schema_template())"
    made = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    print(json.dumps({"schema_template": made.stdout.strip(), "seconds": round(time.perf_counter() - t0, 3)}))
    summary = []
    for cases in a.cases:
        with tempfile.TemporaryDirectory(prefix="startup_") as tmp:
            manifest = write_study(Path(tmp), cases, a.size)
            got: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
            for r in range(a.rounds):
                for kind in kinds if r % 2 == 0 else kinds[::-1]:
                    got[kind].append(run_child(kind, manifest, a.size))
                    print(json.dumps({"cases": cases, "round": r, **got[kind][-1]}), flush=True)
        summary.append(summarize(cases, got))
    print(json.dumps({"summary": summary}))


if __name__ == "__main__":
    main()
