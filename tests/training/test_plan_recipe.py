"""medimg plan: the fingerprint and the planned workflow on synthetic datasets of very different grids.

Three datasets: MR-like isotropic 1 mm (declared MR in the manifest), CT-like 0.7 x 0.7 x 5 mm
with a few 2.5 mm scans (Hounsfield units, modality recognised from the intensities) and tiny
28^3 volumes. Every derived value is asserted, the plan is deterministic for a fingerprint and
a machine, and the YAML loads with the strict schema.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from medimg.cli.main import main
from medimg.config.load import load_workflow
from medimg.data.fingerprint import fingerprint_dataset, fingerprint_json
from medimg.data.planner import GIB, Machine
from medimg.data.recipe import plan_dataset, plan_workflow
from medimg.data.recipe_rules import divisors, target_spacing
from medimg.data.synthetic import SyntheticGrid, write_synthetic_study

CPU = Machine(ram_available=16 * GIB, disk_free=100 * GIB, cpu_count=2)
GPU = Machine(ram_available=64 * GIB, disk_free=500 * GIB, cpu_count=16, device="cuda", vram_free=80 * GIB)


def _study(root, shape, spacing, cases, seed=0, modality=None):
    manifest = write_synthetic_study(
        root, cases=cases, seed=seed, grid=SyntheticGrid(shape=shape, spacing=spacing, oblique_deg=0)
    )
    if modality:
        df = pd.read_csv(manifest)
        df["modality"] = modality
        df.to_csv(manifest, index=False)
    return manifest


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    mr = _study(root / "mr", (48, 48, 48), (1.0, 1.0, 1.0), 6, modality="MR")
    # CT-like: six 5 mm scans and two 2.5 mm scans of 64 x 64 x 12 voxels in one manifest
    thick = _study(root / "ct", (64, 64, 12), (0.7, 0.7, 5.0), 6, seed=1)
    thin = _study(root / "ct_thin", (64, 64, 12), (0.7, 0.7, 2.5), 2, seed=2)
    both = pd.concat([pd.read_csv(thick), pd.read_csv(thin).assign(image=lambda d: "../ct_thin/" + d.image,
                                                                   label=lambda d: "../ct_thin/" + d.label,
                                                                   lesion=lambda d: "../ct_thin/" + d.lesion,
                                                                   case_key=lambda d: "thin_" + d.case_key,
                                                                   patient_key=lambda d: "thin_" + d.patient_key)])  # fmt: skip
    ct = root / "ct" / "all.csv"
    both.to_csv(ct, index=False)
    tiny = _study(root / "tiny", (28, 28, 28), (1.5, 1.5, 1.5), 8, seed=3)
    return {"mr": mr, "ct": ct, "tiny": tiny}


@pytest.fixture(scope="module")
def fingerprints(datasets):
    return {k: fingerprint_dataset(v, "segmentation") for k, v in datasets.items()}


def test_fingerprint_reads_every_header_and_the_foreground(fingerprints):
    ct = fingerprints["ct"]
    assert ct["n_cases"] == 8 and len(ct["cases"]) == 8
    assert ct["spacing"]["median"] == [0.7, 0.7, 5.0] and ct["spacing"]["min"] == [0.7, 0.7, 2.5]
    assert ct["shape"]["median"] == [64.0, 64.0, 12.0]
    assert ct["modality"] == "CT" and ct["modality_from"].startswith("intensities")
    # synthetic organs are 120 and 220 HU, the lesion 320, with noise and a bias field: the foreground
    # percentiles lie around them, far from the -900 HU air outside the body
    p = ct["intensity"]["percentiles"]
    assert 40 < p["p00_5"] < 120 and 220 < p["p99_5"] < 400 and ct["intensity"]["image_p00_5_median"] < -800
    assert set(ct["labels"]) == {"1", "2"}
    for label in ct["labels"].values():
        assert label["present_fraction"] == 1.0 and label["components"]["max"] >= 1
        assert 0 < label["volume_ml"]["min"] <= label["volume_ml"]["median"] <= label["volume_ml"]["max"]
    mr = fingerprints["mr"]
    assert mr["modality"] == "MR" and mr["modality_from"] == "declared"
    assert mr["spacing"]["median"] == [1.0, 1.0, 1.0] and mr["shape"]["median"] == [48.0, 48.0, 48.0]
    # no path of any file in the fingerprint: case keys only
    text = fingerprint_json(ct)
    assert "nii" not in text and "/" not in text.replace("label > 0", "")


def test_anisotropy_rule():
    thick = np.array([[0.7, 0.7, 5.0]] * 6 + [[0.7, 0.7, 2.5]] * 2)
    few = np.array([[64, 64, 12]] * 8)
    spacing, why = target_spacing(thick, few)
    assert spacing == [0.7, 0.7, 2.5] and "10th percentile" in why
    many = np.array([[64, 64, 200]] * 8)  # thick but many slices: nnU-Net keeps the median
    assert target_spacing(thick, many)[0] == [0.7, 0.7, 5.0]
    assert target_spacing(np.array([[1.0, 1.0, 2.0]] * 8), few)[0] == [1.0, 1.0, 2.0]  # ratio 2 <= 3


def test_plan_mr_isotropic(fingerprints):
    r = plan_workflow(fingerprints["mr"], "segmentation", CPU, 1200, manifest="mr.csv")
    assert r.get("preprocessing.spacing") == [1.0, 1.0, 1.0]
    assert r.get("preprocessing.intensity") == {"mode": "zscore", "nonzero": False}
    assert r.get("augmentation.patch_size") == [48, 48, 48]  # the whole median case fits 48^3
    p = r.get("model.params")
    assert p["strides"] == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    # a CPU and a budget under an hour: the narrower DynUNet (twice the steps)
    assert p["kernel_size"] == [[3, 3, 3]] * 4 and p["filters"] == [8, 16, 32, 64]
    assert r.get("inference.tta_flips") is True  # the median case is one 48^3 window
    assert r.get("model.name") == "dynunet" and r.get("optim.optimizer") == "adamw"
    assert r.get("augmentation.spatial")["prob"] == 0.0  # a short CPU budget: no random affine
    assert r.get("trainer.max_time") == "20m" and r.get("trainer.accelerator") == "cpu"
    assert r.get("data.labels") == {0: "background", 1: "label_1", 2: "label_2"}


def test_plan_ct_anisotropic(fingerprints):
    fp = fingerprints["ct"]
    r = plan_workflow(fp, "segmentation", CPU, 1200, manifest="ct.csv")
    assert r.get("preprocessing.spacing") == [0.7, 0.7, 2.5]
    assert "anisotropy" in r.reasons["preprocessing.spacing"]
    p = fp["intensity"]["percentiles"]
    assert r.get("preprocessing.intensity") == {
        "mode": "clip_zscore",
        "window": [p["p00_5"], p["p99_5"]],
        "stats": [fp["intensity"]["mean"], fp["intensity"]["std"]],
    }
    # median resampled case: 64 x 64 x 24 (twelve 5 mm slices at 2.5 mm): 98304 voxels <= 48^3
    patch = r.get("augmentation.patch_size")
    assert patch == [64, 64, 24]
    params = r.get("model.params")
    assert params["kernel_size"][0] == [3, 3, 1]  # the coarse axis convolves in-plane first
    assert params["strides"][1] == [2, 2, 1]  # and is not pooled while 3.6x coarser
    assert all(n % d == 0 for n, d in zip(patch, divisors(params["strides"]), strict=True))
    assert r.get("augmentation.pos_fraction") == 0.67  # small organs


def test_plan_tiny_volumes(fingerprints):
    r = plan_workflow(fingerprints["tiny"], "segmentation", CPU, None, manifest="tiny.csv")
    assert r.get("preprocessing.spacing") == [1.5, 1.5, 1.5]
    assert r.get("augmentation.patch_size") == [28, 28, 28]
    assert r.get("model.params")["strides"] == [[1, 1, 1], [2, 2, 2], [2, 2, 2]]
    # no budget: about 10000 steps; 8 cases, 5 for training at batch 2 -> 3 steps per epoch
    assert r.get("optim.batch_size") == 2
    assert r.get("trainer.max_epochs") == 1000 and r.get("trainer.val_every_n_epochs") == 50
    assert "max_time" not in r.workflow["trainer"]


def test_plan_follows_the_machine_and_budget(fingerprints):
    fp = fingerprints["ct"]
    cpu_long = plan_workflow(fp, "segmentation", CPU, 8 * 3600, manifest="ct.csv")
    gpu = plan_workflow(fp, "segmentation", GPU, 8 * 3600, manifest="ct.csv")
    assert cpu_long.get("augmentation.spatial")["prob"] == 0.2
    assert gpu.get("model.params")["filters"][0] == 32 and gpu.get("optim.optimizer") == "sgd"
    assert cpu_long.get("model.params")["filters"][0] == 16  # a long CPU budget keeps the width
    short = plan_workflow(fp, "segmentation", CPU, 1200, manifest="ct.csv").get("model.params")
    assert short["filters"][0] == 8 and len(short["filters"]) == len(cpu_long.get("model.params")["filters"])
    assert gpu.get("trainer.accelerator") == "gpu" and gpu.get("inference.overlap") == 0.5
    assert gpu.get("optim.batch_size") >= cpu_long.get("optim.batch_size")


def test_flip_tta_only_where_a_median_case_holds_at_most_the_largest_patch():
    from medimg.data.recipe import TTA_WINDOW_VOXELS, Recipe, _tta
    from medimg.data.recipe_rules import sliding_windows

    largest = TTA_WINDOW_VOXELS["cpu"]
    assert largest == 96**3
    hippo = [35.0, 50.0, 36.0]  # MSD Hippocampus's median case at 1 mm
    one, eight, ct, just = Recipe({}), Recipe({}), Recipe({}), Recipe({})
    _tta(one, sliding_windows(hippo, [40, 56, 40], 0.25), 40 * 56 * 40, largest)  # one window
    _tta(eight, sliding_windows(hippo, [32, 48, 32], 0.25), 32 * 48 * 32, largest)  # 8 small windows
    ct_windows = sliding_windows([512.0, 512.0, 120.0], [96, 96, 64], 0.25)
    assert ct_windows == 7 * 7 * 3  # a CT scan: every axis needs several windows
    _tta(ct, ct_windows, 96 * 96 * 64, largest)
    _tta(just, 2, largest // 2 + 1, largest)  # one voxel over the bound
    assert one.get("inference.tta_flips") is True and "4 windows a case" in one.reasons["inference.tta_flips"]
    assert eight.get("inference.tta_flips") is True
    assert "8 windows (393216 voxels)" in eight.reasons["inference.tta_flips"]
    assert "32 windows a case" in eight.reasons["inference.tta_flips"]
    assert ct.get("inference.tta_flips") is False and "4x" in ct.reasons["inference.tta_flips"]
    assert just.get("inference.tta_flips") is False


def test_plan_is_deterministic_and_loads_strictly(datasets, tmp_path):
    texts = []
    for _ in range(2):
        planned = plan_dataset(datasets["ct"], "segmentation", tmp_path / "ct.yaml", "20m", machine=CPU)
        texts.append((planned.workflow_path.read_text(), planned.fingerprint_path.read_text()))
        wf = load_workflow(planned.workflow_path)
        assert wf.preprocessing.spacing == (0.7, 0.7, 2.5) and wf.trainer.max_time == "20m"
        assert wf.model.name == "dynunet" and wf.augmentation.patch_size == (64, 64, 24)
        assert wf.data.manifest == str(datasets["ct"].resolve())
    assert texts[0] == texts[1]
    yaml_text = texts[0][0]
    # every derived value carries its reason as a comment on its line
    for key, why in planned.recipe.reasons.items():
        assert f"{key.split('.')[-1]}:" in yaml_text and f"# {why}" in yaml_text, key
    assert yaml.safe_load(yaml_text)["optim"]["weight_decay"] == 3e-05  # a float, not the text '3e-05'


def test_plan_classification(datasets):
    fp = fingerprint_dataset(datasets["tiny"], "classification", label_column="class")
    assert fp["classes"] == {"0": 4, "1": 4} and "labels" not in fp
    r = plan_workflow(fp, "classification", CPU, 1200, manifest="tiny.csv", label_column="class")
    assert r.get("data.num_classes") == 2 and r.get("data.label_column") == "class"
    assert r.get("preprocessing.spatial_size") == [32, 32, 32]  # 28^3 rounded up to a multiple of 8
    assert r.get("model.name") == "densenet121" and r.get("augmentation.patch_size") is None
    assert r.get("optim.optimizer") == "adamw" and r.get("optim.lr") == 1e-4  # not segmentation's 3e-3
    # 20 CPU minutes: a few epochs, no augmentation; a GPU or a long budget augments
    assert r.get("augmentation.flip_prob") == 0.0 and r.get("augmentation.intensity")["prob"] == 0.0
    assert "too few to overfit" in r.reasons["augmentation.flip_prob"]
    for machine, budget in ((GPU, 1200), (CPU, 5 * 3600)):
        long = plan_workflow(fp, "classification", machine, budget, manifest="tiny.csv", label_column="class")
        assert (
            long.get("augmentation.flip_prob") == 0.5 and long.get("augmentation.intensity")["prob"] == 0.15
        )
        assert long.get("model.name") == "densenet121" and long.get("optim.lr") == 1e-4
    # DenseNet121 halves each axis five times: a smaller case is planned at 32 voxels per axis, never less
    small = {**fp, "cases": [{**c, "shape": [12, 20, 40]} for c in fp["cases"]]}
    r = plan_workflow(small, "classification", CPU, 1200, manifest="tiny.csv", label_column="class")
    assert r.get("preprocessing.spatial_size") == [32, 32, 40]


def test_cli_plan_json_and_missing_data(datasets, tmp_path, capsys):
    out = tmp_path / "mr_plan.yaml"
    assert main(["plan", str(datasets["mr"]), "--task", "segmentation", "--out", str(out), "--budget", "90s",
                 "--json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert doc["workflow"] == str(out) and doc["n_cases"] == 6 and doc["modality"] == "MR"
    assert doc["values"]["trainer"]["max_time"] == "90s"
    assert doc["values"]["preprocessing"]["spacing"] == [1.0, 1.0, 1.0]
    assert "preprocessing.spacing" in doc["reasons"]
    assert json.loads((tmp_path / "mr_plan.fingerprint.json").read_text())["n_cases"] == 6
    assert load_workflow(out).name == "mr_plan"
    assert load_workflow(out).data.fingerprint == str(tmp_path / "mr_plan.fingerprint.json")

    missing = tmp_path / "nowhere" / "manifest.csv"
    code = main(["plan", str(missing), "--task", "segmentation", "--out", str(tmp_path / "x.yaml")])
    err = capsys.readouterr().err
    assert code == 3 and str(missing) in err and "Traceback" not in err
    assert not (tmp_path / "x.yaml").exists()
    code = main(["plan", str(datasets["mr"]), "--task", "segmentation", "--out", str(tmp_path / "y.yaml"),
                 "--budget", "20 minutes"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 3 and "--budget" in err and "20m" in err and "Traceback" not in err


@pytest.mark.slow
def test_planned_workflow_trains_and_logs_its_fingerprint(datasets, tmp_path, monkeypatch, capsys):
    import mlflow

    from medimg.data.fingerprint import fingerprint_hash, read_fingerprint

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "tiny_plan.yaml"
    assert (
        main(["plan", str(datasets["tiny"]), "--task", "segmentation", "--out", str(out), "--budget", "15s"])
        == 0
    )
    wf = load_workflow(out)
    fp_path = tmp_path / "tiny_plan.fingerprint.json"
    assert wf.data.fingerprint == str(fp_path) and wf.model.name == "dynunet"
    assert main(["run", str(out)]) == 0  # the planned DynUNet trains, exports (safetensors) and scores
    info = json.loads((tmp_path / "runs/tiny_plan/run.json").read_text())
    client = mlflow.MlflowClient(info["tracking_uri"])
    run = client.get_run(info["run_id"])
    assert run.data.tags["medimg.fingerprint_sha256"] == fingerprint_hash(read_fingerprint(fp_path))
    assert "tiny_plan.fingerprint.json" in {
        a.path.split("/")[-1] for a in client.list_artifacts(info["run_id"], "data")
    }
    assert run.data.metrics["budget_s"] == 15.0 and "test_dice_mean" in run.data.metrics
    assert (tmp_path / "runs/tiny_plan/model/model.safetensors").is_file()


def test_dicom_root_is_fingerprinted_and_refused_for_planning(tmp_path, capsys):
    from medimg.io.dicom.write import write_series
    from medimg.io.volume import Volume

    rng = np.random.default_rng(0)
    for i, thickness in enumerate((2.5, 3.0)):
        data = np.where(rng.random((32, 32, 10)) > 0.5, 40, -900).astype(np.int16)
        write_series(Volume(data, np.diag([0.8, 0.8, thickness, 1.0]), "LPS"), tmp_path / "dicom" / f"s{i}",
                     series_number=i + 1)  # fmt: skip
    fp = fingerprint_dataset(tmp_path / "dicom", "classification")
    assert fp["n_cases"] == 2 and fp["modality"] == "CT" and fp["modality_from"] == "declared"
    assert fp["spacing"]["median"] == [0.8, 0.8, 2.75] and fp["shape"]["median"] == [32.0, 32.0, 10.0]
    assert fp["classes"] == {} and "PHANTOM" not in fingerprint_json(fp)  # series keys are pseudonyms
    code = main(
        ["plan", str(tmp_path / "dicom"), "--task", "classification", "--out", str(tmp_path / "d.yaml")]
    )
    err = capsys.readouterr().err
    assert code == 3 and str(tmp_path / "dicom") in err and "medimg scan" in err and "Traceback" not in err
    assert (tmp_path / "d.fingerprint.json").is_file() and not (tmp_path / "d.yaml").exists()


def test_short_cpu_budget_rounds_the_patch_down_where_it_keeps_most_of_an_axis(tmp_path):
    from medimg.data.recipe_rules import fit_patch

    hippo = [35.0, 50.0, 36.0]  # MSD Hippocampus's median case at 1 mm
    assert fit_patch(hippo, [1.0, 1.0, 1.0], 48**3)[0] == [40, 56, 40]
    assert fit_patch(hippo, [1.0, 1.0, 1.0], 48**3, round_down_within=0.15)[0] == [32, 48, 32]
    # 38 -> 32 would keep 84 %: up to 40; 47 -> 40 keeps 85.1 % and 44 -> 40 91 %: down
    assert fit_patch([38.0, 47.0, 44.0], [1.0, 1.0, 1.0], 48**3, round_down_within=0.15)[0] == [40, 40, 40]
    fp = fingerprint_dataset(
        _study(tmp_path, (35, 50, 36), (1.0, 1.0, 1.0), 6, modality="MR"), "segmentation"
    )
    short = plan_workflow(fp, "segmentation", CPU, 600, manifest="m.csv")
    assert short.get("augmentation.patch_size") == [32, 48, 32]
    assert "rounded down where that keeps 85% of an axis" in short.reasons["augmentation.patch_size"]
    assert short.get("inference.tta_flips") is True  # 8 windows of 32x48x32, less than one 96^3 patch
    for long in (plan_workflow(fp, "segmentation", CPU, 8 * 3600, manifest="m.csv"),
                 plan_workflow(fp, "segmentation", GPU, 1200, manifest="m.csv")):  # fmt: skip
        assert long.get("augmentation.patch_size") == [40, 56, 40]
        assert "rounded down" not in long.reasons["augmentation.patch_size"]
