"""Time from ``medimg run`` to the first training step, stage by stage, vs the script's caching (issue 24).

``python -m benchmarks.profile_startup [--cases 1000] [--size 32]`` writes ``--cases`` small
NIfTI volumes (classification, two classes), then, in one process: the hand-written cached
script's start (``CacheDataset`` of LoadImaged, EnsureChannelFirstd, ScaleIntensityd,
EnsureTyped over the training cases), and medimg's stages of ``run_workflow`` up to the first
training batch (prepare, plan, track, build, then ``fit`` until Lightning starts the first
batch), each timed. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cases", type=int, default=1000)
    p.add_argument("--size", type=int, default=32)
    a = p.parse_args(argv)
    import lightning.pytorch as pl
    from monai import transforms as T
    from monai.data import CacheDataset

    from medimg.config.load import parse_workflow
    from medimg.training.stages.build import build
    from medimg.training.stages.fit import fit
    from medimg.training.stages.plan import plan_study
    from medimg.training.stages.prepare import prepare
    from medimg.training.stages.track import track

    out: dict[str, Any] = {
        "cases": a.cases,
        "size": a.size,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory(prefix="startup_") as tmp:
        manifest = write_study(Path(tmp) / "data", a.cases, a.size)
        wf = parse_workflow(
            {
                "name": "startup",
                "task": "classification",
                "seed": 0,
                "data": {"manifest": str(manifest), "label_column": "label", "num_classes": 2},
                "preprocessing": {
                    "orientation": "RAS",
                    "spacing": None,
                    "intensity": {"mode": "minmax"},
                    "spatial_size": [a.size] * 3,
                },  # fmt: skip
                "augmentation": {"patch_size": None},
                "model": {"name": "resnet10"},
                "optim": {"batch_size": 8},
                "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1},
                "tracking": {"uri": f"sqlite:///{tmp}/mlflow.db", "experiment": "startup"},
                "outputs": {"dir": f"{tmp}/out"},
            },
            source="profile_startup",
        )
        t = {}
        t0 = time.perf_counter()
        data = prepare(wf)
        t["prepare"] = time.perf_counter() - t0
        train = data.df[data.df.split == "train"]
        t0 = time.perf_counter()
        CacheDataset(
            [{"image": str(i), "label": int(c)} for i, c in zip(train.image, train.target, strict=True)],
            T.Compose(
                [
                    T.LoadImaged(keys="image"),
                    T.EnsureChannelFirstd(keys="image"),
                    T.ScaleIntensityd(keys="image"),
                    T.EnsureTyped(keys="image"),
                ]
            ),  # fmt: skip
            cache_rate=1.0,
            num_workers=0,
            progress=False,
        )
        out["script_cache_train_s"] = time.perf_counter() - t0
        out["train_cases"] = len(train)
        t0 = time.perf_counter()
        plan = plan_study(wf, data)
        t["plan (datasets cached: train + val)"] = time.perf_counter() - t0
        import cProfile
        import pstats

        prof = cProfile.Profile()
        t0 = time.perf_counter()
        run = prof.runcall(track, plan, data, False, None)
        t["track (MLflow run, lineage)"] = time.perf_counter() - t0
        stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
        wanted = ("make_logger", "_log_lineage", "file_hashes", "pip_freeze", "git_state", "_log_datasets",
                  "log_artifact", "log_batch", "environment", "set_tag")  # fmt: skip
        out["track_parts_s"] = {
            f"{fn[2]}": round(v[3], 2) for fn, v in stats.items() if fn[2] in wanted and v[3] > 0.05
        }
        t0 = time.perf_counter()
        built = build(plan, data, run, False)
        t["build"] = time.perf_counter() - t0

        class Stop(pl.Callback):
            def on_train_batch_start(self, *args: Any) -> None:
                raise FirstStep

        t0 = time.perf_counter()
        try:
            fit(plan, data, run, built, False, [Stop()])
        except FirstStep:
            pass
        except Exception as exc:  # fit re-raises the cause after marking the run FAILED
            if not isinstance(exc.__cause__ or exc, FirstStep) and "FirstStep" not in repr(exc):
                raise
        t["fit until the first batch"] = time.perf_counter() - t0
        out["medimg_s"] = {k: round(v, 2) for k, v in t.items()}
        out["medimg_total_s"] = round(sum(t.values()), 2)
        out["script_cache_train_s"] = round(out["script_cache_train_s"], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
