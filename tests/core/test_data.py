"""Manifests, Decathlon/nnU-Net layouts, patient-level splits and the synthetic generator."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medimg.config.schema import DataConfig, SplitConfig
from medimg.data.manifest import read_manifest
from medimg.data.splits import assign_splits
from medimg.data.synthetic import SyntheticGrid, make_case, write_synthetic_study
from medimg.errors import DataError, GeometryError


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return write_synthetic_study(
        out, cases=8, seed=3, grid=SyntheticGrid(shape=(24, 22, 16), spacing=(2.0, 1.5, 3.0))
    )


def test_synthetic_is_deterministic_oblique_anisotropic():
    a, b = (
        make_case(2, seed=7, grid=SyntheticGrid(shape=(24, 22, 16))),
        make_case(2, seed=7, grid=SyntheticGrid(shape=(24, 22, 16))),
    )
    np.testing.assert_array_equal(a.image.data, b.image.data)
    np.testing.assert_array_equal(a.label.data, b.label.data)
    assert not np.array_equal(
        a.image.data, make_case(2, seed=8, grid=SyntheticGrid(shape=(24, 22, 16))).image.data
    )
    np.testing.assert_allclose(a.image.spacing, (1.6, 1.6, 2.5), atol=1e-6)
    rot = a.image.affine[:3, :3] / np.array(a.image.spacing)
    assert np.abs(rot - np.eye(3)).max() > 0.05  # oblique, not axis aligned
    assert set(np.unique(a.label.data)) == {0, 1, 2}


def test_synthetic_class_is_decided_by_lesion(study):
    df = pd.read_csv(study)
    for row in df.itertuples():
        lesion = nib.load(study.parent / row.lesion).get_fdata()
        assert (lesion.sum() > 0) == bool(row._5)  # column 'class'


def test_manifest_resolves_paths_and_checks_geometry(study, tmp_path):
    df = read_manifest(DataConfig(manifest=str(study), labels={0: "bg", 1: "organ", 2: "k"}), "segmentation")
    assert len(df) == 8 and all(p.startswith("/") for p in df["image"])
    # a label on a different grid stops with both file names
    bad = pd.read_csv(study)
    lab = nib.load(study.parent / bad.label[0])
    shifted = tmp_path / "shifted.nii.gz"
    aff = lab.affine.copy()
    aff[0, 3] += 5.0
    nib.save(nib.Nifti1Image(np.asarray(lab.dataobj), aff), shifted)
    bad.loc[0, "label"] = str(shifted)
    bad["image"] = [str(study.parent / p) for p in bad["image"]]
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(GeometryError, match="shifted.nii.gz affine differs from image"):
        read_manifest(DataConfig(manifest=str(tmp_path / "bad.csv"), labels={0: "bg"}), "segmentation")


def test_manifest_missing_file_and_column(study, tmp_path):
    df = pd.read_csv(study)
    df["image"] = [str(study.parent / p) for p in df["image"]]
    df["label"] = [str(study.parent / p) for p in df["label"]]
    df.loc[3, "image"] = "/nowhere/missing.nii.gz"
    df.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError, match="case 'case_0003': image file not found: /nowhere/missing.nii.gz"):
        read_manifest(DataConfig(manifest=str(tmp_path / "m.csv"), labels={0: "bg"}), "segmentation")
    with pytest.raises(DataError, match="label column 'klass'"):
        read_manifest(DataConfig(manifest=str(study), label_column="klass"), "classification")


def test_decathlon_and_nnunet_layouts(study, tmp_path):
    df = pd.read_csv(study)
    msd = tmp_path / "Task01"
    (msd / "imagesTr").mkdir(parents=True)
    (msd / "labelsTr").mkdir()
    training = []
    for row in df.head(3).itertuples():
        name = f"{row.case_key}.nii.gz"
        (msd / "imagesTr" / name).write_bytes((study.parent / row.image).read_bytes())
        (msd / "labelsTr" / name).write_bytes((study.parent / row.label).read_bytes())
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    (msd / "dataset.json").write_text(
        json.dumps({"labels": {"0": "background", "1": "organ"}, "training": training})
    )
    out = read_manifest(DataConfig(manifest=str(msd / "dataset.json"), labels={0: "bg"}), "segmentation")
    assert list(out.case_key) == ["case_0000", "case_0001", "case_0002"]
    nn = tmp_path / "Dataset001"
    (nn / "imagesTr").mkdir(parents=True)
    (nn / "labelsTr").mkdir()
    for row in df.head(2).itertuples():
        (nn / "imagesTr" / f"{row.case_key}_0000.nii.gz").write_bytes((study.parent / row.image).read_bytes())
        (nn / "labelsTr" / f"{row.case_key}.nii.gz").write_bytes((study.parent / row.label).read_bytes())
    (nn / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "CT"},
                "labels": {"background": 0},
                "numTraining": 2,
                "file_ending": ".nii.gz",
            }
        )
    )
    out = read_manifest(DataConfig(manifest=str(nn / "dataset.json"), labels={0: "bg"}), "segmentation")
    assert len(out) == 2 and out.target[0].endswith("labelsTr/case_0000.nii.gz")


def test_patient_level_splits_and_kfold():
    df = pd.DataFrame(
        {"case_key": [f"c{i}" for i in range(40)], "patient_key": [f"p{i // 2}" for i in range(40)]}
    )
    s = assign_splits(df, SplitConfig(val_fraction=0.2, test_fraction=0.2, seed=1))
    assert s.groupby("patient_key")["split"].nunique().max() == 1
    assert s.split.value_counts().to_dict() == {"train": 24, "val": 8, "test": 8}
    assert s.equals(assign_splits(df, SplitConfig(val_fraction=0.2, test_fraction=0.2, seed=1)))
    vals = []
    for fold in range(4):
        f = assign_splits(df, SplitConfig(test_fraction=0.2, folds=4, fold=fold, seed=1))
        assert f.groupby("patient_key")["split"].nunique().max() == 1
        vals.append(set(f.loc[f.split == "val", "patient_key"]))
        assert set(f.loc[f.split == "test", "patient_key"]) == set(s.loc[s.split == "test", "patient_key"])
    assert set().union(*vals) == set(s.loc[s.split != "test", "patient_key"])
    assert sum(len(v) for v in vals) == 16  # each non-test patient validates exactly once
    leaky = df.assign(split=["train", "test"] * 20)
    with pytest.raises(DataError, match="appears in more than one split"):
        assign_splits(leaky, SplitConfig())
