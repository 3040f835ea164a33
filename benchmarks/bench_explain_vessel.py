"""Saliency sanity checks on a real trained classifier: VesselMNIST3D (aneurysm or not).

``python -m benchmarks.bench_explain prepare-vessel`` copies ``vesselmnist3d.npz`` (MedMNIST v2,
28^3) from a snapshot of ``KarenMazaDelgado/Aneurysm-3DCNN`` into
``~/.cache/medimg-data/vesselmnist3d/``, writes each case as NIfTI (1 mm isotropic, identity
affine: MedMNIST stores no spacing) and a medimg manifest that keeps the dataset's own
train/val/test split (the published test split is the held-out one; nothing is re-split).

``python -m benchmarks.bench_explain --vessel`` then trains a classifier with ``medimg run`` on a
workflow written here, reads the run's own test scoring, runs ``medimg explain`` with every
classification method and the sanity checks on over a fixed subset of the test split (all its
aneurysm cases and as many vessel cases, the first by index), once for class 1 (aneurysm) and
once for each case's predicted class (the default), and tables per method the deletion and
insertion AUCs against a random voxel order (the insertion baseline is computed here:
``summary.json`` holds the random order's deletion AUC only) and against a random order of the
vessel voxels, and the model-parameter randomisation test (Spearman and SSIM between the
trained and the randomised network's maps).
``docs/explain.md`` ("Real data: VesselMNIST3D classification") quotes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_explain import _niced

SNAPSHOT = Path("/work/.mirror/KarenMazaDelgado+Aneurysm-3DCNN/repo")
NPZ = {28: "DATA SET/vesselmnist3d.npz", 64: "DATA SET/vesselmnist3d_64.npz"}
CACHE = Path.home() / ".cache/medimg-data/vesselmnist3d"
SIZE = 28  # the 28^3 release: 64^3 is 12x the voxels for every training step and every map
SPACING_MM = 1.0  # MedMNIST volumes carry no spacing: 1 mm isotropic, identity affine (RAS)
CLASSES = {0: "vessel", 1: "aneurysm"}
METHODS = ("gradcam", "gradcam++", "occlusion", "integrated-gradients", "smoothgrad")
EPOCHS = 25  # 6 to 15 minutes of two shared CPU cores (measured, docs/explain.md)
PER_CLASS = 43  # explained: all 43 aneurysm test cases and the first 43 vessel ones
STEPS = 16  # points on the deletion/insertion curves, as medimg explain draws them
WORKFLOW = """\
name: vesselmnist3d_cls
task: classification
seed: 0
data:
  manifest: {manifest}
  label_column: aneurysm
  num_classes: 2
preprocessing:
  orientation: RAS
  spacing: [1.0, 1.0, 1.0]
  intensity: {{mode: minmax}}
  spatial_size: [{size}, {size}, {size}]
  cache: {{mode: memory}}
augmentation:
  patch_size: null
  flip_prob: 0.5
  intensity: {{prob: 0.0}}
model:
  name: patchnet
  params: {{channels: [16, 32, 32, 32], pools: [1, 2], input_range: [0.0, 1.0]}}
optim: {{optimizer: adamw, lr: 0.003, batch_size: 16, scheduler: cosine}}
trainer: {{max_epochs: {epochs}, accelerator: cpu, val_every_n_epochs: 1}}
tracking: {{uri: "sqlite:///{work}/mlflow.db", experiment: vesselmnist3d}}
outputs: {{dir: {work}/runs/vesselmnist3d_cls}}
"""


def vessel_not_prepared(cache: Path, detail: str) -> str | None:
    """Why a benchmark on the prepared VesselMNIST3D cache cannot run (``None`` when it is there).

    ``detail`` follows the command that prepares it (what it copies, what to run next).

    Example:
        >>> vessel_not_prepared(Path("/nowhere"), "(then rerun)")
        'skipped: /nowhere/manifest.csv not found; prepare it with `python -m benchmarks.bench_explain prepare-vessel` (then rerun)'
    """
    if (cache / "manifest.csv").is_file():
        return None
    return (
        f"skipped: {cache}/manifest.csv not found; prepare it with "
        f"`python -m benchmarks.bench_explain prepare-vessel` {detail}"
    )


def not_prepared(cache: Path = CACHE) -> str | None:
    """Why the real-data check cannot run (``None`` when the prepared cache is there)."""
    detail = f"(copies vesselmnist3d.npz from a snapshot of KarenMazaDelgado/Aneurysm-3DCNN at {SNAPSHOT})"
    return vessel_not_prepared(cache, detail)


def write_cases(npz: Path, cache: Path) -> dict[str, Any]:
    """Write every case of a MedMNIST 3D ``npz`` as NIfTI and a manifest with the published split.

    Case ``<split>_<index>`` is ``<split>_images[index]`` (uint8, written as is) on a 1 mm
    isotropic grid with the identity affine; its class (``aneurysm``: 1 aneurysm, 0 vessel) is
    ``<split>_labels[index]``. One case is one patient (MedMNIST gives no patient key). The
    manifest (paths relative to it) is written last, so a half-finished copy has none.

    Example:
        >>> write_cases(Path("vesselmnist3d.npz"), Path("cache"))["cases"]  # doctest: +SKIP
        {'train': 1335, 'val': 191, 'test': 382}
    """
    import nibabel as nib
    import numpy as np
    import pandas as pd

    from medimg.io.atomic import atomic_write_text

    data = np.load(npz)
    rows, counts, positives = [], {}, {}
    (cache / "images").mkdir(parents=True, exist_ok=True)
    affine = np.diag([SPACING_MM, SPACING_MM, SPACING_MM, 1.0])
    for split in ("train", "val", "test"):
        images, labels = data[f"{split}_images"], data[f"{split}_labels"].reshape(-1)
        if len(images) != len(labels):
            raise SystemExit(f"{npz}: {split}_images has {len(images)} cases, {split}_labels {len(labels)}")
        for i, (img, y) in enumerate(zip(images, labels, strict=True)):
            key = f"{split}_{i:04d}"
            img = nib.Nifti1Image(np.asarray(img, np.uint8), affine)
            img.header.set_xyzt_units("mm")
            nib.save(img, cache / "images" / f"{key}.nii.gz")
            rows.append({"case_key": key, "patient_key": key, "image": f"images/{key}.nii.gz",
                         "aneurysm": int(y), "split": split})  # fmt: skip
        counts[split], positives[split] = len(images), int(labels.sum())
    atomic_write_text(cache / "manifest.csv", pd.DataFrame(rows).to_csv(index=False))
    return {"cases": counts, "aneurysm": positives, "shape": list(data["train_images"].shape[1:])}


def prepare(snapshot: Path = SNAPSHOT, cache: Path = CACHE, size: int = SIZE) -> dict[str, Any]:
    """Copy ``vesselmnist3d.npz`` out of the bare git snapshot into ``cache``, then :func:`write_cases`."""
    import hashlib

    git = ["git", f"--git-dir={snapshot}"]
    blob = subprocess.run([*git, "cat-file", "blob", f"HEAD:{NPZ[size]}"], capture_output=True)
    if blob.returncode != 0:
        raise SystemExit(f"{snapshot}: cannot read {NPZ[size]!r} ({blob.stderr.decode().strip()})")
    cache.mkdir(parents=True, exist_ok=True)
    npz = cache / Path(NPZ[size]).name
    npz.write_bytes(blob.stdout)
    out = write_cases(npz, cache)
    return {"npz": NPZ[size], "sha256": hashlib.sha256(blob.stdout).hexdigest(), **out}


def _cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def train(work: Path, manifest: Path, epochs: int = EPOCHS) -> tuple[Path, dict[str, Any]]:
    """Train with ``medimg run`` (niced); the model folder, the time it took and the run's test scores.

    A model already trained in ``work`` is reused (delete ``work/runs`` to retrain).
    """
    out = work / "runs/vesselmnist3d_cls"
    record = work / "training.json"
    if not (out / "model/model.safetensors").is_file():
        wf = work / "vesselmnist3d_cls.yaml"
        work.mkdir(parents=True, exist_ok=True)
        wf.write_text(WORKFLOW.format(manifest=manifest, work=work, epochs=epochs, size=SIZE))
        cpu, t0 = _cpu_s(), time.perf_counter()
        subprocess.run(_niced([sys.executable, "-m", "medimg", "run", str(wf)]), cwd=work, check=True)
        timing = {"epochs": epochs, "wall_s": round(time.perf_counter() - t0, 1)}
        record.write_text(json.dumps({**timing, "cpu_s": round(_cpu_s() - cpu, 1)}))
    timing = json.loads(record.read_text()) if record.is_file() else {"reused": True}
    timing["test"] = json.loads((out / "test_summary.json").read_text())
    return out / "model", timing


def subset(manifest: Path, per_class: int | None = PER_CLASS) -> Any:
    """The explained test cases: per class, the first ``per_class`` by index (``None``: every one)."""
    import pandas as pd

    df = pd.read_csv(manifest)
    test = df[df["split"] == "test"]
    parts = [g.head(per_class) if per_class else g for _c, g in test.groupby("aneurysm")]
    return pd.concat(parts).sort_values("case_key")


def explain(
    model: Path, manifest: Path, out: Path, target_class: int | None, methods: tuple[str, ...] = METHODS
) -> dict[str, Any]:
    """``medimg explain`` over :func:`subset`, sanity checks on (niced, timed; ``None``: predicted class)."""
    cases = subset(manifest)
    out.mkdir(parents=True, exist_ok=True)
    cases_csv = out / "cases.csv"
    cases.assign(image=[str(manifest.parent / p) for p in cases["image"]]).to_csv(cases_csv, index=False)
    cmd = [sys.executable, "-m", "medimg", "explain", "--model", str(model), str(cases_csv)]
    cmd += ["--out", str(out), *[a for m in methods for a in ("--method", m)], "--no-progress", "--no-mlflow"]
    cmd += [] if target_class is None else ["--target-class", str(target_class)]
    cpu, t0 = _cpu_s(), time.perf_counter()
    proc = subprocess.run(_niced(cmd), capture_output=True, text=True)
    failures = json.loads((out / "failures.json").read_text()) if (out / "failures.json").is_file() else None
    return {
        "target_class": "predicted" if target_class is None else target_class,
        "cases": len(cases),
        "exit_code": proc.returncode,
        "failures": failures,
        "wall_s": round(time.perf_counter() - t0, 1),
        "cpu_s": round(_cpu_s() - cpu, 1),
        "stdout_tail": proc.stdout.strip().splitlines()[-3:],
    }


def random_order_map(shape: tuple[int, ...], seed: int = 0) -> Any:
    """A map whose voxel order (most salient first) is the random order ``deletion_insertion`` draws.

    Example:
        >>> import numpy as np
        >>> m = random_order_map((2, 2, 2))
        >>> bool((np.argsort(-m.ravel()) == np.random.default_rng(0).permutation(8)).all())
        True
    """
    import numpy as np

    order = np.random.default_rng(seed).permutation(int(np.prod(shape)))
    ranks = np.empty(order.size, np.float32)
    ranks[order] = np.arange(order.size, 0, -1)
    return ranks.reshape(shape)


def baselines(model: Path, manifest: Path, summary: dict[str, Any], maps: Path) -> dict[str, dict[str, Any]]:
    """Per explained case: the random baselines, drawn as ``medimg explain`` draws its curves.

    Same preprocessing, same target (the class the methods explained, from ``summary.json``),
    same score (that class's probability), same baseline image (0) and steps:

    * ``random_insertion_auc``: the insertion AUC of the random order ``medimg explain`` uses for
      its random deletion curve (a permutation, seed 0; ``summary.json`` has no insertion one);
    * ``vessel_random_deletion_auc`` / ``..._insertion_auc``: a random order of the vessel voxels
      (non-zero on the model grid), then the rest: only vessel voxels change the image, so this
      is the baseline a map must beat to rank vessel voxels better than chance;
    * ``score`` / ``empty_score``: the score on the image and on an empty (all-0) image;
    * ``vessel_fraction``; ``mass_on_vessel``: per method, the share of the map's positive part
      (the map ``medimg explain`` wrote in ``maps``) on vessel voxels.
    """
    import nibabel as nib
    import numpy as np
    import pandas as pd
    import torch

    from medimg.explain.maps import method_slug
    from medimg.explain.sanity import deletion_insertion
    from medimg.explain.targets import class_probability_score
    from medimg.inference.model_io import load_trained

    tm = load_trained(str(model))
    net = tm.model.eval()
    df = pd.read_csv(manifest)
    images = {r.case_key: str(manifest.parent / r.image) for r in df.itertuples()}
    out: dict[str, dict[str, Any]] = {}
    for row in summary["cases"]:
        if row.get("status") != "ok":
            continue
        key = row["case_key"]
        targets = {int(m["target"]["class"]) for m in row["methods"].values()}
        if len(targets) != 1:
            raise RuntimeError(f"{key}: methods explained different classes {targets}")
        x, _meta = tm.preprocess(images[key])
        x = x[None].float()
        score = class_probability_score(targets.pop())
        shape = tuple(x.shape[2:])
        r = deletion_insertion(net, x, random_order_map(shape), score, steps=STEPS, with_random=False)
        vessel = (x[0, 0] > 0).cpu().numpy()
        ranked = np.random.default_rng(0).random(shape) + vessel  # vessel voxels first, in random order
        v = deletion_insertion(net, x, ranked, score, steps=STEPS, with_random=False)
        with torch.no_grad():
            p, p_empty = (float(score(net(t))[0]) for t in (x, torch.zeros_like(x)))
        mass = {}
        for method in row["methods"]:
            m = np.asarray(nib.load(maps / key / f"{method_slug(method)}.nii.gz").dataobj, np.float64)
            if m.shape != shape:
                raise RuntimeError(f"{key}: {method} map {m.shape} is not on the model grid {shape}")
            pos = np.clip(m, 0, None)
            mass[method] = float(pos[vessel].sum() / pos.sum()) if pos.sum() > 0 else float("nan")
        out[key] = {
            "random_insertion_auc": r.insertion_auc,
            "vessel_random_deletion_auc": v.deletion_auc,
            "vessel_random_insertion_auc": v.insertion_auc,
            "score": p,
            "empty_score": p_empty,
            "vessel_fraction": float(vessel.mean()),
            "mass_on_vessel": mass,
        }
    return out


_CASE_STATS = ("score", "empty_score", "vessel_fraction")


def _stats(v: list[float]) -> dict[str, float]:
    import numpy as np

    return {"mean": round(float(np.nanmean(v)), 4), "median": round(float(np.nanmedian(v)), 4)}


def _groups(summary: dict[str, Any]) -> dict[str, set[str]]:
    """Case keys explained, all and per reference class."""
    ok = [c for c in summary["cases"] if c.get("status") == "ok"]
    by_class = {CLASSES[k]: {c["case_key"] for c in ok if c.get("reference") == k} for k in CLASSES}
    return {"all": {c["case_key"] for c in ok}, **by_class}


def method_table(summary: dict[str, Any], base: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per method and per reference class: the sanity numbers of ``summary.json`` summarised.

    ``beats_random``: deletion AUC below the random order's, insertion AUC above it (``base``:
    from :func:`baselines`; ``beats_vessel_random``: the same against a random vessel order);
    ``passes``: medimg's own verdicts (randomisation: Spearman and SSIM below 0.5; faithful:
    deletion at least 0.05 below random and insertion at least 0.05 above deletion).
    """
    stats = _stats
    ok = [c for c in summary["cases"] if c.get("status") == "ok"]
    groups = {name: [c for c in ok if c["case_key"] in keys] for name, keys in _groups(summary).items()}
    table: dict[str, Any] = {}
    for method in ok[0]["methods"]:
        table[method] = {}
        for name, cases in groups.items():
            rows = [(c["case_key"], c["methods"][method]) for c in cases]
            if not rows:
                continue
            d = [m["deletion_auc"] for _k, m in rows]
            rd = [m["random_deletion_auc"] for _k, m in rows]
            ins = [m["insertion_auc"] for _k, m in rows]
            ri = [base[k]["random_insertion_auc"] for k, _m in rows]
            vd = [base[k]["vessel_random_deletion_auc"] for k, _m in rows]
            vi = [base[k]["vessel_random_insertion_auc"] for k, _m in rows]
            table[method][name] = {
                "cases": len(rows),
                "deletion_auc": stats(d),
                "random_deletion_auc": stats(rd),
                "deletion_beats_random": int(sum(a < b for a, b in zip(d, rd, strict=True))),
                "insertion_auc": stats(ins),
                "random_insertion_auc": stats(ri),
                "insertion_beats_random": int(sum(a > b for a, b in zip(ins, ri, strict=True))),
                "vessel_random_deletion_auc": stats(vd),
                "deletion_beats_vessel_random": int(sum(a < b for a, b in zip(d, vd, strict=True))),
                "vessel_random_insertion_auc": stats(vi),
                "insertion_beats_vessel_random": int(sum(a > b for a, b in zip(ins, vi, strict=True))),
                "mass_on_vessel": stats([base[k]["mass_on_vessel"][method] for k, _m in rows]),
                "spearman": stats([m["spearman"] for _k, m in rows]),
                "ssim": stats([m["ssim"] for _k, m in rows]),
                "randomisation_passes": int(
                    sum(abs(m["spearman"]) < 0.5 and m["ssim"] < 0.5 for _k, m in rows)
                ),
                "medimg_verdict_passes": int(sum(bool(m["passed"]) for _k, m in rows)),
            }
    return table


def run_vessel(
    work: Path = CACHE / "bench", targets: tuple[int | None, ...] = (1, None), cache: Path = CACHE
) -> dict[str, Any]:
    """The whole check: train (or reuse), score, explain (once per target), measure.

    ``targets``: the class each ``medimg explain`` call explains (``None``: each case's predicted
    class, the default). Returns the JSON result (skipped with a reason when not prepared).
    """
    import datetime

    reason = not_prepared(cache)
    if reason:
        return {"skipped": reason}
    manifest = cache / "manifest.csv"
    model, training = train(work, manifest)
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "data": f"VesselMNIST3D {SIZE}^3, {SPACING_MM} mm isotropic (assumed), MedMNIST split",
        "training": training,
        "load_average": os.getloadavg(),
        "explain": {},
    }
    for target in targets:
        name = "predicted" if target is None else f"class_{target}"
        out = work / f"explain_{name}"
        done = out / "explain_run.json"  # a finished explain call is reused (delete it to rerun)
        record = json.loads(done.read_text()) if done.is_file() else explain(model, manifest, out, target)
        done.write_text(json.dumps(record))
        summary = json.loads((out / "summary.json").read_text())
        record.pop("last_lines", None)  # stderr's last lines (warnings), kept by an earlier version
        record["explained"] = sum(c.get("status") == "ok" for c in summary["cases"])
        t0 = time.perf_counter()
        base = baselines(model, manifest, summary, out)
        record["baselines_s"] = round(time.perf_counter() - t0, 1)
        record["methods"] = method_table(summary, base)
        record["scores"] = {
            name: {k: _stats([b[k] for c, b in base.items() if c in keys]) for k in _CASE_STATS}
            for name, keys in _groups(summary).items()
        }
        record["per_case"] = base
        result["explain"][name] = record
    result["load_average_after"] = os.getloadavg()
    return result


def save(result: dict[str, Any]) -> Path:
    """Write the result to ``benchmarks/results/explain_vessel-<UTC time>.json`` (git-ignored)."""
    from benchmarks.common import save_result

    return save_result("explain_vessel", result)
