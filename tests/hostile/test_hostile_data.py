"""Hostile inputs through the real CLI: each is refused with a reason, never read on a guessed grid.

Every command reads images through medimg's strict reader only, so ``predict`` fails a case
with the reason ``convert`` gives; NaN voxels, pixdim 0, singular or disagreeing NIfTI
affines, a half-filled split column and out-of-range workflow values are refused, naming
the file, case or key; a NaN loss fails the MLflow run before any model is exported.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import tracemalloc
from pathlib import Path

import mlflow
import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from _tiny import tiny_workflow, write_wf

from medimg.cli.main import main
from medimg.data.synthetic import SyntheticGrid, write_synthetic_study
from medimg.errors import DataError, GeometryError
from medimg.io.dicom.write import write_series
from medimg.io.load import load_image, read_nifti

SYNTH = {"cases": 8, "seed": 2, "shape": [32, 30, 20], "spacing": [1.6, 1.7, 2.5]}
PHANTOM_SHAPE = (32, 30, 12)
SPLIT = ["train"] * 5 + ["val"] + ["test"] * 2  # one split per patient of the synthetic study


@pytest.fixture(autouse=True)
def _fresh_log_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    """``main`` and Lightning attach log handlers once; one left on an earlier test's captured
    (closed) stream would print a logging error into this test's stderr."""
    for name in ("", "lightning", "lightning.pytorch", "lightning.fabric"):
        monkeypatch.setattr(logging.getLogger(name), "handlers", [])


def _quick_wf(**data_changes: object) -> dict:
    """The tiny study, one epoch, with ``data`` keys changed."""
    wf = tiny_workflow()
    wf["trainer"] = {"max_epochs": 1}
    wf["data"].update(data_changes)
    return wf


def _in(root: Path, argv: list[str]) -> int:
    old = os.getcwd()
    os.chdir(root)
    try:
        return main(argv)
    finally:
        os.chdir(old)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model")
    assert _in(root, ["run", str(write_wf(root / "tiny.yaml", _quick_wf()))]) == 0
    return root / "runs/tiny_seg/model"


def _study(root: Path) -> pd.DataFrame:
    """The tiny synthetic study written into ``root/data/synth``, with its manifest."""
    s = SYNTH
    write_synthetic_study(
        root / "data/synth",
        cases=s["cases"],
        seed=s["seed"],
        grid=SyntheticGrid(shape=tuple(s["shape"]), spacing=tuple(s["spacing"])),
    )
    return pd.read_csv(root / "data/synth/manifest.csv")


def _image_path(root: Path, df: pd.DataFrame, i: int, column: str = "image") -> Path:
    return (root / "data/synth" / str(df[column].iloc[i])).resolve()


def _rewrite_nifti(path: Path, fn) -> None:
    img = nib.load(path)
    data = np.asarray(img.dataobj).copy()
    out = fn(data, img)
    nib.save(out if isinstance(out, nib.Nifti1Image) else nib.Nifti1Image(out, img.affine, img.header), path)


# --- the MLflow run, the split column, --check ---------------------------------------------------


def test_nan_training_image_refused_and_no_model_exported(tmp_path: Path, capsys) -> None:
    df = _study(tmp_path)
    df["split"] = SPLIT  # the NaN case is a training case
    df.to_csv(tmp_path / "data/synth/manifest.csv", index=False)
    bad = _image_path(tmp_path, df, 1)

    def poison(data, img):
        data = data.astype(np.float32)
        data[3, 4, 5] = np.nan
        return data

    _rewrite_nifti(bad, poison)
    wf = write_wf(tmp_path / "wf.yaml", _quick_wf())
    capsys.readouterr()
    assert _in(tmp_path, ["run", str(wf), "--check"]) != 0
    err = capsys.readouterr().err
    assert "case_0001/image.nii.gz: 1 NaN/inf voxel(s)" in err and "Traceback" not in err
    assert _in(tmp_path, ["run", str(wf)]) != 0
    err = capsys.readouterr().err
    assert "case_0001/image.nii.gz: 1 NaN/inf voxel(s)" in err and "Traceback" not in err
    assert not (tmp_path / "runs/tiny_seg/model/model.safetensors").exists()
    db = tmp_path / "runs/mlflow.db"
    if db.exists():  # no run may say FINISHED
        client = mlflow.MlflowClient(f"sqlite:///{db}")
        for exp in client.search_experiments():
            assert all(r.info.status != "FINISHED" for r in client.search_runs([exp.experiment_id]))


def test_nan_training_image_zeroed_when_the_workflow_says_so(tmp_path: Path, capsys) -> None:
    df = _study(tmp_path)
    bad = _image_path(tmp_path, df, 0)
    _rewrite_nifti(bad, lambda d, img: np.where(np.arange(d.size).reshape(d.shape) % 97 == 0, np.inf, d))
    wf = write_wf(tmp_path / "wf.yaml", _quick_wf(nonfinite="zero"))
    assert _in(tmp_path, ["run", str(wf), "--check"]) == 0
    assert "8 cases" in capsys.readouterr().out
    from medimg.data.loading import LoadStrictd

    item = LoadStrictd(keys="image", nonfinite="zero")({"image": str(bad)})
    assert item["image"].meta["nonfinite_zeroed"] == len(range(0, int(np.prod(SYNTH["shape"])), 97))
    assert bool(np.isfinite(item["image"].numpy()).all())


def test_nan_loss_fails_the_mlflow_run_without_exporting(tmp_path: Path, capsys, monkeypatch) -> None:
    from monai.losses import DiceCELoss

    monkeypatch.setattr(DiceCELoss, "forward", lambda self, x, y: (x * 0).sum() * float("nan"))
    wf = write_wf(tmp_path / "wf.yaml", _quick_wf())
    assert _in(tmp_path, ["run", str(wf)]) != 0
    err = capsys.readouterr().err
    assert "training loss is nan at epoch 0, step 0" in err and "Traceback" not in err
    info = json.loads((tmp_path / "runs/tiny_seg/run.json").read_text())
    run = mlflow.MlflowClient(info["tracking_uri"]).get_run(info["run_id"])
    assert run.info.status == "FAILED" and info["status"] == "failed"
    assert "training loss is nan" in run.data.tags["medimg.failure"]
    assert not (tmp_path / "runs/tiny_seg/model").exists()


def test_blank_split_cell_refused_naming_the_row(tmp_path: Path, capsys) -> None:
    df = _study(tmp_path)
    df["split"] = SPLIT
    df.loc[6, "split"] = ""  # a held-out test case with its split cell left blank
    df.to_csv(tmp_path / "data/synth/manifest.csv", index=False)
    wf = write_wf(tmp_path / "wf.yaml", _quick_wf())
    for argv in (["run", str(wf), "--check"], ["run", str(wf)]):
        assert _in(tmp_path, argv) != 0
        err = capsys.readouterr().err
        assert "column 'split' is blank in 1 of 8 rows" in err and "CSV lines [8]" in err
        assert repr(str(df.case_key[6])) in err and "Traceback" not in err
    assert not (tmp_path / "runs/tiny_seg/run.json").exists()


def _check_case(root: Path, name: str) -> tuple[dict, Path]:
    """A workflow dict and the study root, with the hostile edit ``name`` applied."""
    df = _study(root)
    wf = _quick_wf()
    label = _image_path(root, df, 2, "label")
    image = _image_path(root, df, 2)
    if name == "spacing0":
        wf["preprocessing"]["spacing"] = [0, 2.5, 2.5]
    elif name == "patch0":
        wf["augmentation"]["patch_size"] = [16, 0, 16]
    elif name == "window":
        wf["preprocessing"]["intensity"]["window"] = [300, -200]
    elif name == "negative_label":
        wf["data"]["labels"] = {0: "background", -1: "organ", 2: "kidney"}
    elif name == "label_gap":
        wf["data"]["labels"] = {0: "background", 1: "organ", 3: "kidney"}
    elif name == "label_value":
        _rewrite_nifti(label, lambda d, img: np.where(d == 2, 5, d).astype(d.dtype))
    elif name == "four_d":
        _rewrite_nifti(image, lambda d, img: nib.Nifti1Image(np.stack([d, d], -1), img.affine))
    elif name == "singular":

        def singular(d, img):
            img = nib.Nifti1Image(d, img.affine)
            img.set_sform(np.diag([1.6, 0.0, 2.5, 1.0]), code=1)  # a slice direction of length 0
            img.set_qform(None, code=0)
            return img

        _rewrite_nifti(image, singular)
    elif name == "pixdim0":

        def zero_pixdim(d, img):
            img = nib.Nifti1Image(d, None)
            img.header["pixdim"][1:4] = (1.6, 0.0, 2.5)
            img.header["qform_code"] = 1
            return img

        _rewrite_nifti(image, zero_pixdim)
    elif name == "no_dicom":
        folder = root / "data/synth/empty_series"
        folder.mkdir()
        (folder / "notes.txt").write_text("no images here")
        df.loc[2, "image"] = "empty_series"
        df.to_csv(root / "data/synth/manifest.csv", index=False)
    return wf, root


CHECKS = {
    "spacing0": "preprocessing.spacing = [0.0, 2.5, 2.5]: every value must be > 0",
    "patch0": "augmentation.patch_size = [16, 0, 16]: every value must be > 0",
    "window": "preprocessing.intensity.window = [300.0, -200.0]: expected low < high",
    "negative_label": "data.labels: value(s) [-1] are negative",
    "label_value": "label value(s) [5.0] not in data.labels [0, 1, 2]",
    "label_gap": "data.labels values [0, 1, 3]: expected 0 (background) to 2 with no gap",
    "four_d": "image has 4 dimensions",
    "singular": "is singular",
    "pixdim0": "voxel size pixdim[1:4] = (1.6, 0.0, 2.5)",
    "no_dicom": "no usable DICOM volume",
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_check_refuses_what_training_would_hit(tmp_path: Path, capsys, name: str) -> None:
    wf, root = _check_case(tmp_path, name)
    path = write_wf(root / "wf.yaml", wf)
    assert _in(root, ["run", str(path), "--check"]) != 0
    err = capsys.readouterr().err
    assert CHECKS[name] in err and "Traceback" not in err
    if name in ("label_value", "four_d", "singular", "pixdim0", "no_dicom"):
        assert "case 'case_" in err  # the case is named, with its file


# --- NIfTI header: bounded reading and geometry ----------------------------------------------------


def test_nifti_promising_too_many_voxels_refused_before_inflating(tmp_path: Path, monkeypatch) -> None:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((64, 64, 64))
    hdr.set_data_dtype(np.float32)
    hdr.set_data_offset(352)
    path = tmp_path / "bomb.nii.gz"
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(hdr.binaryblock + b"\0" * 4)
        fh.write(b"\0" * (64**3 * 4))
    monkeypatch.setenv("MEDIMG_MAX_VOXELS", str(64**3 - 1))
    with pytest.raises(DataError, match=r"bomb.nii.gz: header promises 262144 voxels .* limit of 262143"):
        read_nifti(path)
    monkeypatch.setenv("MEDIMG_MAX_VOXELS", str(64**3))
    assert read_nifti(path).shape == (64, 64, 64)


def test_nifti_reading_stops_at_what_the_header_promises(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.arange(512, dtype=np.float32).reshape(8, 8, 8), np.diag([1.0, 2.0, 3.0, 1.0]))
    img.header.set_data_offset(352)
    path = tmp_path / "trailing.nii.gz"
    raw = img.header.binaryblock + b"\0" * 4 + img.get_fdata(dtype=np.float32).tobytes(order="F")
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(raw)
        block = b"\0" * (1 << 22)
        for _ in range(64):  # 256 MiB of trailing bytes after the promised voxels
            fh.write(block)
    tracemalloc.start()
    vol = read_nifti(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 32 * 2**20, f"read_nifti held {peak / 2**20:.0f} MiB for a 2 KiB image"
    np.testing.assert_array_equal(vol.data, np.arange(512, dtype=np.float32).reshape(8, 8, 8))


def _qs_image(path: Path, shift: float) -> Path:
    aff = np.diag([1.5, 1.5, 2.0, 1.0])
    img = nib.Nifti1Image(np.ones((6, 5, 4), np.float32), aff)
    sform = aff.copy()
    sform[0, 3] += shift
    img.set_qform(aff, code=1)
    img.set_sform(sform, code=2)
    nib.save(img, path)
    return path


def test_qform_sform_disagreement_refused_or_chosen(tmp_path: Path) -> None:
    path = _qs_image(tmp_path / "qs.nii.gz", 4.0)
    with pytest.raises(GeometryError, match=r"qs.nii.gz: qform and sform disagree by up to 4 mm"):
        load_image(path)
    vol = load_image(path, affine_policy="qform")
    assert vol.affine[0, 3] == 0.0 and vol.meta["qa_flags"] == ["qform_sform_differ_4mm_used_qform"]
    vol = load_image(path, affine_policy="sform")
    assert vol.affine[0, 3] == 4.0 and vol.meta["qform_code"] == 1 and vol.meta["sform_code"] == 2
    same = load_image(_qs_image(tmp_path / "same.nii.gz", 0.0))
    assert same.meta["qa_flags"] == [] and same.affine[0, 3] == 0.0


@pytest.mark.parametrize("pixdim", [(0.0, 1.0, 1.0), (1.0, -2.0, 1.0), (1.0, 1.0, np.nan)])
def test_bad_pixdim_refused_naming_the_file(tmp_path: Path, pixdim: tuple[float, float, float]) -> None:
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), None)
    img.header["pixdim"][1:4] = pixdim
    img.header["qform_code"] = 1
    nib.save(img, tmp_path / "p.nii")
    with pytest.raises(GeometryError, match=r"p.nii: voxel size pixdim\[1:4\]"):
        load_image(tmp_path / "p.nii")


# --- predict and convert agree on every DICOM folder ------------------------------------------------


def _phantoms():
    """``tests/io/dicom_phantoms.py``, the asymmetric phantoms the I/O tests use."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "dicom_phantoms", Path(__file__).parents[1] / "io/dicom_phantoms.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_corpus(root: Path) -> dict[str, str | None]:
    """DICOM folders (and NIfTI files) for predict: name -> words of the refusal (None: good)."""
    phantom = _phantoms().phantom

    root.mkdir(parents=True)
    expected: dict[str, str | None] = {}
    kw = {"rescale": (1.0, -1024.0), "shuffle_names": True}
    write_series(phantom("axial", shape=PHANTOM_SHAPE, spacing=(1.6, 1.7, 2.5)), root / "axial", **kw)
    expected["axial"] = None
    oblique = phantom("coronal", shape=PHANTOM_SHAPE, spacing=(1.6, 1.7, 2.5), oblique=(10.0, 5.0, 0.0))
    write_series(oblique, root / "oblique_coronal", **kw)
    expected["oblique_coronal"] = None
    write_series(phantom("sagittal", shape=PHANTOM_SHAPE, spacing=(1.6, 1.7, 2.5)), root / "sagittal", **kw)
    expected["sagittal"] = None

    two = root / "two_patients"
    write_series(phantom("axial", shape=PHANTOM_SHAPE), two, patient_id="P1", file_prefix="A", **kw)
    write_series(phantom("axial", shape=PHANTOM_SHAPE, seed=1), two, patient_id="P2", file_prefix="B", **kw)
    expected["two_patients"] = None  # two series, two cases (convert asks which one)

    files = write_series(phantom("axial", shape=PHANTOM_SHAPE), root / "missing_slice")
    files[5].unlink()
    expected["missing_slice"] = "missing slice"

    files = write_series(phantom("axial", shape=PHANTOM_SHAPE), root / "duplicate_slice")
    ds = pydicom.dcmread(files[4])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.InstanceNumber = 99
    ds.save_as(root / "duplicate_slice" / "IM_dup.dcm")
    expected["duplicate_slice"] = "duplicate slice position"

    files = write_series(phantom("axial", shape=PHANTOM_SHAPE), root / "gap_3mm")
    for f in files[6:]:
        ds = pydicom.dcmread(f)
        ds.ImagePositionPatient = [float(v) for v in ds.ImagePositionPatient[:2]] + [
            float(ds.ImagePositionPatient[2]) + 3.0
        ]
        ds.save_as(f)
    expected["gap_3mm"] = "spacing"

    return expected


@pytest.fixture(scope="module")
def corpus_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """``predict`` on each input of the corpus on its own: name -> its cohort summary."""
    root = tmp_path_factory.mktemp("corpus")
    expected = _write_corpus(root / "in")
    nan = np.ones(PHANTOM_SHAPE, np.float32) * 40
    nan[4, 5, 6] = np.nan
    nib.save(nib.Nifti1Image(nan, np.diag([1.6, 1.7, 2.5, 1.0])), root / "in" / "nan_image.nii.gz")
    expected["nan_image"] = "1 NaN/inf voxel"
    _qs_image(root / "in" / "qform_sform.nii.gz", 4.0)
    expected["qform_sform"] = "qform and sform disagree by up to 4 mm"
    runs = {}
    for path in sorted((root / "in").iterdir()):
        name = path.name.split(".")[0]
        main(["predict", str(tiny_model), str(path), "--out", str(root / "out" / name), "--no-progress"])
        runs[name] = pd.read_csv(root / "out" / name / "cohort.csv")
    return root, expected, runs


def test_predict_fails_hostile_cases_with_their_reason_and_finishes_the_rest(corpus_run) -> None:
    root, expected, runs = corpus_run
    assert set(runs) == set(expected)
    for name, words in expected.items():
        rows, masks = runs[name], sorted((root / "out" / name).rglob("mask.nii.gz"))
        if words is None:
            # one case per series: the two patients' series are two cases, never one merged volume
            assert list(rows.status) == ["done"] * (2 if name == "two_patients" else 1), f"{name}: {rows}"
            assert [nib.load(m).shape for m in masks] == [PHANTOM_SHAPE] * len(rows)
        else:
            assert len(rows) and set(rows.status) == {"failed"}, f"{name}: {rows}"
            for reason in rows.reason:
                assert words in reason and "applying transform" not in reason and "object at 0x" not in reason
            assert not masks  # no partial output


def test_predict_and_convert_agree_on_every_dicom_folder(corpus_run, capsys) -> None:
    from medimg.io.dicom.discover import discover

    root, expected, runs = corpus_run
    for path in sorted((root / "in").iterdir()):
        name = path.name.split(".")[0]
        capsys.readouterr()
        rc = main(["convert", str(path), str(root / "converted" / f"{name}.nii.gz")])
        err = capsys.readouterr().err
        rows, masks = runs[name], sorted((root / "out" / name).rglob("mask.nii.gz"))
        if rc == 0:  # converted: predict segments it on the same grid
            grids = [nib.load(root / "converted" / f"{name}.nii.gz")]
        elif "usable series" in err:  # a folder of several series: each converts as folder#series_key
            keys = [s.keys()["series_key"] for s in discover(path)[0] if s.kind == "volume"]
            grids = []
            for i, key in enumerate(keys):
                assert main(["convert", f"{path}#{key}", str(root / "converted" / f"{name}_{i}.nii.gz")]) == 0
                grids.append(nib.load(root / "converted" / f"{name}_{i}.nii.gz"))
        else:  # refused: predict fails the case for the same reason, and writes nothing
            assert "Traceback" not in err and expected[name] in err, err
            assert set(rows.status) == {"failed"} and not masks
            assert all(expected[name] in r for r in rows.reason)
            if path.is_file():  # the same reader refused it: the very same words
                assert all(err.split("error: ", 1)[1].strip() in r for r in rows.reason)
            continue
        assert list(rows.status) == ["done"] * len(grids) and len(masks) == len(grids), name
        for mask in map(nib.load, masks):
            assert any(
                mask.shape == ref.shape and np.allclose(mask.affine, ref.affine, atol=1e-4) for ref in grids
            ), f"{name}: mask grid {mask.shape} matches no converted series"


def _no_position_series(folder: Path) -> Path:
    files = write_series(_phantoms().phantom("axial", shape=PHANTOM_SHAPE), folder)
    ds = pydicom.dcmread(files[3])
    del ds.ImagePositionPatient
    ds.save_as(files[3])
    return folder


def test_slice_without_image_position_is_refused_by_convert(tmp_path: Path, capsys) -> None:
    series = _no_position_series(tmp_path / "no_position")
    with pytest.raises(DataError, match=r"IM0003\.dcm: no ImagePositionPatient"):
        load_image(series)
    capsys.readouterr()
    assert main(["convert", str(series), str(tmp_path / "c.nii.gz")]) != 0
    err = capsys.readouterr().err
    assert "IM0003.dcm: no ImagePositionPatient" in err and "Traceback" not in err
    assert not (tmp_path / "c.nii.gz").exists()


def test_slice_without_image_position_fails_its_case_in_predict(tiny_model: Path, tmp_path: Path) -> None:
    series = _no_position_series(tmp_path / "no_position")
    out = tmp_path / "o"
    assert main(["predict", str(tiny_model), str(series), "--out", str(out), "--no-progress"]) != 0
    rows = pd.read_csv(out / "cohort.csv")
    assert set(rows.status) == {"failed"} and all(
        "IM0003.dcm: no ImagePositionPatient" in r for r in rows.reason
    )
    assert not list(out.rglob("mask.nii.gz"))


def test_predicted_mask_keeps_the_source_nifti_form_codes(tiny_model: Path, tmp_path: Path) -> None:
    src = tmp_path / "aligned.nii.gz"
    img = nib.Nifti1Image(np.full(PHANTOM_SHAPE, 40, np.float32), np.diag([1.6, 1.7, 2.5, 1.0]))
    img.set_sform(img.affine, code=2)
    img.set_qform(None, code=0)
    nib.save(img, src)
    assert main(["predict", str(tiny_model), str(src), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    mask = nib.load(tmp_path / "o/cases/aligned/mask.nii.gz")
    assert (int(mask.header["sform_code"]), int(mask.header["qform_code"])) == (2, 0)
    np.testing.assert_allclose(mask.affine, img.affine, atol=1e-5)


def test_network_output_with_nan_fails_the_case(tiny_model: Path, tmp_path: Path, monkeypatch) -> None:
    import torch

    from medimg.inference.predictor import Predictor

    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(np.full(PHANTOM_SHAPE, 40, np.float32), np.diag([1.6, 1.7, 2.5, 1.0])), good)
    shutil.copy(good, tmp_path / "second.nii.gz")
    real, calls = Predictor.probabilities, []

    def poisoned(self, x, source_shape=None):  # the first case's network answer is NaN
        calls.append(1)
        out = real(self, x, source_shape)
        return out * torch.nan if len(calls) == 1 else out

    monkeypatch.setattr(Predictor, "probabilities", poisoned)
    out = tmp_path / "o"
    assert (
        main(
            ["predict", str(tiny_model), str(tmp_path), "--out", str(out), "--no-progress", "--prefetch", "1"]
        )
        != 0
    )
    summary = pd.read_csv(out / "cohort.csv").set_index("case_id")
    assert sorted(summary.status) == ["done", "failed"]
    failed = summary[summary.status == "failed"]
    assert "the network output holds" in failed.reason.iloc[0] and "NaN/inf" in failed.reason.iloc[0]
    assert not (out / "cases" / failed.index[0] / "mask.nii.gz").exists()


@pytest.mark.parametrize("name", ["label_value", "four_d"])
def test_training_without_check_refuses_with_the_same_reason(tmp_path: Path, capsys, name: str) -> None:
    wf, root = _check_case(tmp_path, name)
    df = pd.read_csv(root / "data/synth/manifest.csv")
    df["split"] = SPLIT  # case_0002 trains
    df.to_csv(root / "data/synth/manifest.csv", index=False)
    assert _in(root, ["run", str(write_wf(root / "wf.yaml", wf))]) != 0
    err = capsys.readouterr().err
    assert CHECKS[name] in err and "case_0002/" in err
    assert "Traceback" not in err and "applying transform" not in err
    assert not (root / "runs/tiny_seg/model").exists()


def test_explain_fails_a_nan_image_with_the_reader_reason(tiny_model: Path, tmp_path: Path, capsys) -> None:
    good = np.full((32, 32, 16), 40, np.float32)  # on the model's 2.5 mm grid: UNet-divisible as is
    good[8:20, 8:20, 3:9] = 250
    nib.save(nib.Nifti1Image(good, np.diag([2.5, 2.5, 2.5, 1.0])), tmp_path / "good.nii.gz")
    good[1, 2, 3] = np.inf
    nib.save(nib.Nifti1Image(good, np.diag([2.5, 2.5, 2.5, 1.0])), tmp_path / "inf_image.nii.gz")
    out = tmp_path / "explained"
    argv = [
        "explain",
        "--model",
        str(tiny_model),
        str(tmp_path / "good.nii.gz"),
        str(tmp_path / "inf_image.nii.gz"),
    ]
    assert main([*argv, "--out", str(out), "--no-progress", "--no-mlflow"]) == 1
    rows = {r["case_key"]: r for r in json.loads((out / "summary.json").read_text())["cases"]}
    assert rows["inf_image"]["status"] == "failed" and "1 NaN/inf voxel(s)" in rows["inf_image"]["reason"]
    assert rows["good"]["status"] != "failed" and (out / "good" / "report.html").is_file()
    assert "Traceback" not in capsys.readouterr().err


def test_qform_sform_choice_in_the_workflow_is_recorded_in_the_case(tiny_model: Path, tmp_path: Path) -> None:
    from medimg.inference.model_io import load_trained, save_trained

    trained = load_trained(tiny_model)
    wf = trained.workflow.model_copy(deep=True)
    wf.data.nifti_affine = "sform"  # the same weights, saved with a workflow that trusts the sform
    model = save_trained(trained.model, wf, tmp_path / "model")
    src = _qs_image(tmp_path / "qs.nii.gz", 4.0)
    assert main(["predict", str(model), str(src), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    case = json.loads((tmp_path / "o/cases/qs/case.json").read_text())
    assert case["extra"]["input_qa_flags"] == ["qform_sform_differ_4mm_used_sform"]
    mask = nib.load(tmp_path / "o/cases/qs/mask.nii.gz")
    assert mask.affine[0, 3] == pytest.approx(4.0) and int(mask.header["sform_code"]) == 2
