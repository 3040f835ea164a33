"""Where the saliency methods point, on the shipped classification quickstart (the pointing game).

Trains ``workflows/quickstart_cls.yaml`` exactly as shipped (in a temporary folder), then
generates positive cases the model never saw (``make_case(1000 + i, seed=7,
with_lesion=True)``: another study seed) and, for each method, counts the cases whose map
peaks inside the lesion mask. The named baseline is chance: the fraction of the model
grid's voxels that are lesion (where a peak at a random voxel would land), measured on
the same cases. It also checks that the model uses the lesion at all: the predicted
probability with the lesion filled with its surroundings' median intensity.

Every method runs at its defaults (Grad-CAM at the network's default layer). Grad-CAM's
localisation depends on the trained weights, so the workflow is also trained with other seeds
(``EXTRA_SEEDS``) and Grad-CAM and Grad-CAM++ are scored for each; and, for comparison, with
the network the quickstart used before (``RESNET``: a ResNet-10 with global average pooling,
output stride 4) at three seeds. ``docs/explain.md`` quotes this benchmark. Run alone:
``python -m benchmarks --only explain``.

``python -m benchmarks.bench_explain --real`` checks a segmentation model on real MRI: MSD
Hippocampus (``prepare`` copies it from a snapshot of ``udacity/nd320-c3-3d-imaging-starter``
into ``~/.cache/medimg-data/hippocampus/``). The split is fixed first, from the sorted case names
(last 20 % test, last 10 % of the rest validation); each case then goes through medimg's manifest
checks and a refused case is left out with medimg's reason. A UNet is trained with ``medimg run``
on the training part, ``medimg explain`` runs over every test case, and the Seg-Grad-CAM maps are
scored: their mass inside the predicted structure (against the structure's share of the volume)
and deletion/insertion AUCs (against a random map).

``python -m benchmarks.bench_explain --vessel`` checks a classifier on real data: VesselMNIST3D
(aneurysm or vessel; ``prepare-vessel`` writes it into ``~/.cache/medimg-data/vesselmnist3d/``),
with medimg explain's own sanity checks; see ``benchmarks/bench_explain_vessel.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

NAME = "explain"
ROOT = Path(__file__).resolve().parents[1]
METHODS = ("smoothgrad", "integrated-gradients", "occlusion", "gradcam", "gradcam++")
EXTRA_SEEDS = (1, 7, 3, 11)
RESNET = (
    "model.name=resnet10",
    "model.params={widen_factor: 0.25, conv1_t_size: 5, conv1_t_stride: 2, output_stride: 4}",
)
RESNET_SEEDS = (42, 1, 7)


def _train(folder: Path, quick: bool, seed: int | None = None, sets: tuple[str, ...] = ()) -> Path:
    from medimg.cli.main import main

    old = os.getcwd()
    folder.mkdir(parents=True, exist_ok=True)
    os.chdir(folder)
    try:
        extra = ["--set", "trainer.max_epochs=2"] if quick else []
        extra += ["--set", f"seed={seed}"] if seed is not None else []
        for item in sets:
            extra += ["--set", item]
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            assert main(["run", str(ROOT / "workflows/quickstart_cls.yaml"), *extra]) == 0
    finally:
        os.chdir(old)
    return folder / "runs/quickstart_cls/model"


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure; return result rows (see ``benchmarks.common.row``)."""
    import numpy as np
    import torch

    from benchmarks.common import row
    from benchmarks.lesion_cases import synthetic_lesion_cases
    from medimg.explain import compute_saliency
    from medimg.explain.layers import default_target_layer
    from medimg.explain.targets import class_probabilities
    from medimg.inference.model_io import load_trained

    n = 4 if quick else 20
    hits: dict[str, int] = {}
    distances: dict[str, list[float]] = {}  # from each map's peak to the lesion's centre, in voxels
    p_before: list[float] = []
    p_filled: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench_explain_") as tmp:
        root = Path(tmp)
        tm = load_trained(str(_train(root, quick)))
        model = tm.model.eval()
        cases = synthetic_lesion_cases(root, n, tm.preprocess)
        chance = [float(c.structure.mean()) for c in cases if c.structure is not None]
        default_layer = default_target_layer(model, cases[0].tensor)

        def count(net: torch.nn.Module, key: str, method: str) -> None:
            for c in cases:
                assert c.structure is not None
                peak = compute_saliency(net, c.tensor, method, target_class=1).peak_index
                hits[key] = hits.get(key, 0) + bool(c.structure[peak])
                centre = np.argwhere(c.structure).mean(0)
                distances.setdefault(key, []).append(float(np.linalg.norm(np.subtract(peak, centre))))

        for c in cases:
            # does the model use the lesion? fill it with the median of a 2-voxel shell around it
            x, m = c.tensor, torch.as_tensor(c.structure)[None, None]
            shell = (torch.nn.functional.max_pool3d(m.float(), 5, 1, 2) > 0) & ~m
            filled = x.clone()
            filled[m] = x[shell].median()
            with torch.no_grad():
                p_before.append(float(class_probabilities(model(x))[0, 1]))
                p_filled.append(float(class_probabilities(model(filled))[0, 1]))
        for method in METHODS:
            count(model, f"{method} (default)" if method.startswith("gradcam") else method, method)
        for seed in () if quick else EXTRA_SEEDS:
            other = load_trained(str(_train(root / f"seed{seed}", quick, seed))).model.eval()
            for method in ("gradcam", "gradcam++"):
                count(other, f"{method} (default), training seed {seed}", method)
        for seed in () if quick else RESNET_SEEDS:
            resnet = load_trained(str(_train(root / f"resnet{seed}", quick, seed, RESNET))).model.eval()
            count(resnet, f"gradcam (layer4), resnet10 at output stride 4, training seed {seed}", "gradcam")
    base = float(np.mean(chance))
    extra = {
        "cases": n,
        "default_gradcam_layer": default_layer,
        "p_positive_range": [round(min(p_before), 3), round(max(p_before), 3)],
        "p_positive_lesion_filled_range": [round(min(p_filled), 3), round(max(p_filled), 3)],
    }
    return [
        row(
            NAME,
            f"{key}: peak inside the lesion, {n} unseen positive cases, quickstart_cls",
            "fraction of cases",
            hits[key] / n,
            "chance (lesion fraction of the model grid)",
            base,
            higher_is_better=True,
            hits=hits[key],
            median_peak_to_lesion_centre_vox=round(float(np.median(distances[key])), 2),
            **extra,
        )
        for key in hits
    ]


# --- real data: MSD Hippocampus (``--real``) -------------------------------------------------

SNAPSHOT = Path("/work/.mirror/udacity+nd320-c3-3d-imaging-starter/repo")
CACHE = Path.home() / ".cache/medimg-data/hippocampus"
TEST_FRACTION = 0.2  # the last 20 % of the sorted case names; fixed before anything else
VAL_FRACTION = 0.1  # the last 10 % of the rest
EPOCHS = 20  # about five minutes of two shared CPU cores (measured, docs/explain.md)
WORKFLOW = """\
name: hippocampus_seg
task: segmentation
seed: 0
data:
  manifest: {manifest}
  labels: {{0: background, 1: anterior, 2: posterior}}
preprocessing:
  orientation: RAS
  spacing: [1.0, 1.0, 1.0]
  intensity: {{mode: zscore}}
  cache: {{mode: memory}}
augmentation:
  patch_size: [32, 32, 32]
  samples_per_volume: 2
  flip_prob: 0.0
  intensity: {{prob: 0.5, shift: 0.1, scale: 0.1}}
model:
  name: unet
  params: {{channels: [16, 32, 64, 128], strides: [2, 2, 2], num_res_units: 1}}
optim: {{optimizer: adamw, lr: 0.003, batch_size: 4, scheduler: cosine, loss: dice_ce}}
trainer: {{max_epochs: {epochs}, accelerator: cpu, val_every_n_epochs: {epochs}}}
inference: {{overlap: 0.25, sw_batch_size: 4, blend: gaussian}}
tracking: {{uri: "sqlite:///{work}/mlflow.db", experiment: hippocampus}}
outputs: {{dir: {work}/runs/hippocampus_seg}}
"""


def prepare(snapshot: Path = SNAPSHOT, cache: Path = CACHE) -> dict[str, int]:
    """Copy the Hippocampus images and labels blob by blob from the repository snapshot.

    The snapshot is a bare git repository (``udacity/nd320-c3-3d-imaging-starter``); every
    ``data/TrainingSet/{images,labels}/*.nii.gz`` blob is written to ``cache``. Blobs the
    snapshot lists but does not hold are skipped and counted.
    """
    import subprocess

    git = ["git", f"--git-dir={snapshot}"]
    listing = subprocess.run(
        [*git, "ls-tree", "-r", "HEAD", "data/TrainingSet/"], capture_output=True, text=True
    )
    if listing.returncode != 0:
        raise SystemExit(f"{snapshot}: not a readable git snapshot ({listing.stderr.strip()})")
    counts = {"copied": 0, "absent": 0}
    for line in listing.stdout.splitlines():
        meta, path = line.split("\t", 1)
        sha = meta.split()[2]
        folder = Path(path).parent.name
        if folder not in ("images", "labels") or not path.endswith(".nii.gz"):
            continue
        blob = subprocess.run([*git, "cat-file", "-p", sha], capture_output=True)
        if blob.returncode != 0:
            counts["absent"] += 1
            continue
        target = cache / folder / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob.stdout)
        counts["copied"] += 1
    return counts


def fixed_split(names: list[str]) -> dict[str, str]:
    """``{case: split}``: the last 20 % of the sorted names are test, the last 10 % of the rest val.

    Example:
        >>> sorted(fixed_split([f"c{i}" for i in range(10)]).items())[-2:]
        [('c8', 'test'), ('c9', 'test')]
    """
    names = sorted(names)
    n_test = round(len(names) * TEST_FRACTION)
    rest = names[: len(names) - n_test]
    n_val = round(len(rest) * VAL_FRACTION)
    return {
        n: "test" if i >= len(rest) else "val" if i >= len(rest) - n_val else "train"
        for i, n in enumerate(names)
    }


def checked_manifest(cache: Path, work: Path) -> tuple[Path, dict[str, str], dict[str, str]]:
    """Write the manifest of the cases medimg's data checks accept; return it, the split and the refusals.

    Every case name seen among images or labels is split first (:func:`fixed_split`); each case
    is then checked alone with :func:`medimg.data.manifest.read_manifest` (files present, label
    on the image's grid), and a refused case is left out with medimg's reason.
    """
    import pandas as pd

    from medimg.config.schema import DataConfig
    from medimg.errors import MedimgError

    names = {p.name[: -len(".nii.gz")] for d in ("images", "labels") for p in (cache / d).glob("*.nii.gz")}
    split = fixed_split(sorted(names))
    rows, refused = [], {}
    work.mkdir(parents=True, exist_ok=True)
    one = work / "one_case.csv"
    for name in sorted(names):
        r = {
            "case_key": name,
            "patient_key": name,
            "image": str(cache / "images" / f"{name}.nii.gz"),
            "label": str(cache / "labels" / f"{name}.nii.gz"),
            "split": split[name],
        }
        pd.DataFrame([r]).to_csv(one, index=False)
        try:
            read_manifest_checked(DataConfig(manifest=str(one)))
        except MedimgError as exc:
            refused[name] = f"{type(exc).__name__}: {str(exc).replace(str(cache), '<cache>')}"
            continue
        rows.append(r)
    one.unlink()
    manifest = work / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest, split, refused


def read_manifest_checked(cfg: Any) -> None:
    """medimg's own manifest checks for a segmentation study (raises its DataError/GeometryError)."""
    from medimg.data.manifest import read_manifest

    read_manifest(cfg, "segmentation")


def _niced(cmd: list[str], level: int = 10) -> list[str]:
    """``cmd`` run at niceness ``level`` (this process's, when it is already that nice or nicer)."""
    step = level - os.nice(0)
    return ["nice", "-n", str(step), *cmd] if step > 0 else cmd


def train(work: Path, manifest: Path, epochs: int = EPOCHS) -> tuple[Path, dict[str, Any]]:
    """Train the benchmark's UNet with ``medimg run`` (niced); the model folder and the time it took.

    A model already trained in ``work`` is reused (delete ``work/runs`` to retrain); its time is
    read back from ``training.json``, written when it was trained.
    """
    import resource
    import subprocess
    import sys
    import time

    model, record = work / "runs/hippocampus_seg/model", work / "training.json"
    if (model / "model.safetensors").is_file():
        return model, json.loads(record.read_text()) if record.is_file() else {"reused": True}
    wf = work / "hippocampus_seg.yaml"
    wf.write_text(WORKFLOW.format(manifest=manifest, work=work, epochs=epochs))
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(_niced([sys.executable, "-m", "medimg", "run", str(wf)]), cwd=work, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    timing = {"epochs": epochs, "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(cpu, 1)}
    record.write_text(json.dumps(timing))
    return model, timing


def test_cases(manifest: Path) -> Any:
    """The test rows of the benchmark's manifest (the refused cases are not in it)."""
    import pandas as pd

    df = pd.read_csv(manifest)
    return df[df["split"] == "test"]


def start_explain(model: Path, manifest: Path, out: Path, methods: tuple[str, ...]) -> Any:
    """Start ``medimg explain`` over every test case (niced, no sanity checks: measured here)."""
    import subprocess
    import sys

    images = [str(p) for p in test_cases(manifest)["image"]]
    cmd = [sys.executable, "-m", "medimg", "explain", "--model", str(model), *images, "--out", str(out)]
    cmd += [a for m in methods for a in ("--method", m)] + ["--no-progress", "--no-mlflow", "--no-sanity"]
    return subprocess.Popen(_niced(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def deletion_rows(model: Path, manifest: Path, label: int = 1, steps: int = 10) -> list[dict[str, Any]]:
    """Deletion/insertion AUCs of Seg-Grad-CAM and of a random map, per test case, on the model grid.

    The map is computed as ``medimg explain`` computes it (same preprocessing, same windows). The
    score is the mean probability of ``label`` inside the region predicted on the unchanged image
    (fixed); deletion replaces the most salient voxels first by the image mean, insertion puts
    them back onto an image of the mean; the baseline is a uniformly random map (random order).
    """
    import sys

    import numpy as np
    import torch

    from medimg.explain.sanity import deletion_insertion
    from medimg.explain.targets import region_probability_score
    from medimg.explain.windows import WindowedNetwork, target_region, window_plan, windowed_saliency
    from medimg.inference.model_io import load_trained

    torch.manual_seed(0)
    tm = load_trained(str(model))
    rows = []
    for i, case in enumerate(test_cases(manifest).itertuples()):
        x, _meta = tm.preprocess(case.image)
        x = x[None].float()
        plan = window_plan(tm.workflow, tm.model, tuple(x.shape[2:]))
        net = WindowedNetwork(tm.model, plan)
        region, _how = target_region(tm.model, x, plan, label)
        score = region_probability_score(label, region)
        cam = windowed_saliency(tm.model, x, "seg-gradcam", plan, label=label)
        mean = float(x.mean())
        ours = deletion_insertion(net, x, cam, score, steps=steps, baseline=mean, with_random=False)
        noise = np.random.default_rng(i).random(cam.array.shape).astype(np.float32)
        rnd = deletion_insertion(net, x, noise, score, steps=steps, baseline=mean, with_random=False)
        print(f"deletion/insertion {i + 1}: {case.case_key}", file=sys.stderr, flush=True)
        rows.append(
            {
                "case": case.case_key,
                "deletion": ours.deletion_auc,
                "insertion": ours.insertion_auc,
                "random_deletion": rnd.deletion_auc,
                "random_insertion": rnd.insertion_auc,
            }
        )
    return rows


def mass_rows(
    model: Path, manifest: Path, out: Path, label: int = 1, method: str = "seg-gradcam"
) -> list[dict[str, Any]]:
    """Per test case: the share of the ``method`` map ``medimg explain`` wrote that lies inside the
    structure ``Predictor`` predicts (both on the scan's grid), that structure's share of the
    volume (a uniform map's score), and the Dice of the prediction with the reference label.
    """
    import nibabel as nib
    import numpy as np

    from medimg.evaluation.seg_metrics import label_metrics
    from medimg.explain.maps import method_slug
    from medimg.inference.model_io import load_trained
    from medimg.inference.predictor import Predictor

    tm = load_trained(str(model))
    predictor = Predictor(tm.model, tm.workflow, device="cpu")
    rows = []
    for case in test_cases(manifest).itertuples():
        pred = predictor.predict_path(case.image, case.case_key)
        assert pred.mask is not None
        ref = nib.load(case.label)
        structure = pred.mask == label
        spacing = tuple(float(z) for z in ref.header.get_zooms()[:3])
        path = out / case.case_key / f"{method_slug(method)}.nii.gz"
        cam = np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)
        total = float(cam.sum())
        rows.append(
            {
                "case": case.case_key,
                "dice": label_metrics(structure, np.asarray(ref.dataobj) == label, spacing)["dice"],
                "mass_inside": float(cam[structure].sum()) / total if total > 0 else float("nan"),
                "volume_fraction": float(structure.mean()),
            }
        )
    return rows


def _summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    out: dict[str, Any] = {"cases": len(rows)}
    for k in [k for k in rows[0] if k != "case"]:
        v = np.array([r[k] for r in rows], dtype=float)
        out[k] = {"mean": round(float(np.nanmean(v)), 4), "median": round(float(np.nanmedian(v)), 4)}
    if "deletion" in rows[0]:
        out["deletion_beats_random"] = sum(r["deletion"] < r["random_deletion"] for r in rows)
        out["insertion_beats_random"] = sum(r["insertion"] > r["random_insertion"] for r in rows)
    return out


REAL_METHODS = ("seg-gradcam", "seg-integrated-gradients", "seg-smoothgrad", "uncertainty")


def run_real(work: Path, methods: tuple[str, ...] = REAL_METHODS) -> dict[str, Any]:
    """The whole real-data check: prepare (if needed), split, check, train, explain, measure.

    ``medimg explain`` runs in its own (niced) process while this one measures deletion and
    insertion; the mass inside the structure is read from its maps once it has finished.
    """
    import datetime
    import time

    if not (CACHE / "images").is_dir():
        print(json.dumps({"prepare": prepare()}))
    manifest, split, refused = checked_manifest(CACHE, work)
    model, training = train(work, manifest)
    out = work / "explain"
    t0 = time.perf_counter()
    proc = start_explain(model, manifest, out, methods)
    deletion = deletion_rows(model, manifest)
    log_text, _ = proc.communicate()
    explain_s = time.perf_counter() - t0
    failures = json.loads((out / "failures.json").read_text()) if (out / "failures.json").is_file() else None
    mass = {m: mass_rows(model, manifest, out, method=m) for m in methods if m != "uncertainty"}
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "split": {k: sum(1 for v in split.values() if v == k) for k in ("train", "val", "test")},
        "refused_by_medimg_checks": refused,
        "training": training,
        "explain": {
            "methods": list(methods),
            "cases": len(test_cases(manifest)),
            "failures": failures,
            "exit_code": proc.returncode,
            "wall_s_with_deletion": round(explain_s, 1),
            "last_lines": log_text.strip().splitlines()[-2:],
        },
        "mass": {m: _summarise(rows) for m, rows in mass.items()},
        "deletion_insertion": _summarise(deletion),
        "rows": {"mass": mass, "deletion": deletion},
    }


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "stage", nargs="?", choices=("prepare", "prepare-vessel", "measure"), default="measure"
    )
    parser.add_argument("--real", action="store_true", help="MSD Hippocampus (see docs/explain.md)")
    parser.add_argument("--vessel", action="store_true", help="VesselMNIST3D (see docs/explain.md)")
    parser.add_argument(
        "--work", default=None, help="real modes: split, model and maps (default: in the cache)"
    )
    args = parser.parse_args()
    if args.stage == "prepare":
        print(json.dumps(prepare(), indent=2))
    elif args.stage == "prepare-vessel":
        from benchmarks.bench_explain_vessel import prepare as prepare_vessel

        print(json.dumps(prepare_vessel(), indent=2))
    elif args.vessel:
        from benchmarks.bench_explain_vessel import CACHE as VESSEL_CACHE
        from benchmarks.bench_explain_vessel import run_vessel, save

        result = run_vessel(Path(args.work or VESSEL_CACHE / "bench"))
        print(json.dumps(result, indent=2))
        if "skipped" not in result:
            print(f"saved: {save(result)}")
    elif args.real:
        print(json.dumps(run_real(Path(args.work or CACHE / "bench")), indent=2))
    else:
        print(json.dumps(run(quick=True), indent=2))
