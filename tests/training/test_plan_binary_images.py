"""Binary images (VesselMNIST3D's vessel segments are 0/255): the fingerprint notices them and the plan
does not z-score over non-zero voxels, which would map every voxel of such an image to 0."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medimg.config.load import parse_workflow
from medimg.data.fingerprint import fingerprint_dataset
from medimg.data.planner import GIB, Machine
from medimg.data.recipe import plan_workflow
from medimg.data.synthetic import SyntheticGrid, write_synthetic_study
from medimg.data.transforms import eval_transforms

CPU = Machine(ram_available=16 * GIB, disk_free=100 * GIB, cpu_count=2)


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("binary")
    grey = write_synthetic_study(
        root, cases=6, seed=7, grid=SyntheticGrid(shape=(20, 20, 20), spacing=(1.0, 1.0, 1.0))
    )
    df = pd.read_csv(grey)
    for i, rel in enumerate(df.image):  # a thresholded copy of each case: 0 or 255, mostly 0
        img = nib.load(root / rel)
        data = np.asarray(img.dataobj, dtype=np.float32)
        binary = np.where(data > np.percentile(data, 90), 255, 0).astype(np.uint8)
        nib.save(nib.Nifti1Image(binary, img.affine), root / f"binary_{i}.nii.gz")
    df["image"] = [f"binary_{i}.nii.gz" for i in range(len(df))]
    df.to_csv(root / "binary.csv", index=False)
    df = pd.read_csv(grey).assign(modality="MR")  # declared MR: the per-case z-score rule applies
    df.to_csv(root / "grey.csv", index=False)
    return {"grey": root / "grey.csv", "binary": root / "binary.csv"}


def _plan(manifest):
    fp = fingerprint_dataset(manifest, "classification", label_column="class")
    return fp, plan_workflow(fp, "classification", CPU, 600, manifest=str(manifest), label_column="class")


def test_binary_images_are_z_scored_over_the_whole_image(studies):
    fp, r = _plan(studies["binary"])
    assert fp["intensity"]["constant_nonzero_fraction"] == 1.0
    assert fp["intensity"]["zero_fraction_median"] > 0.25  # the old rule would have chosen nonzero
    assert r.get("preprocessing.intensity") == {"mode": "zscore", "nonzero": False}
    assert "binary images" in r.reasons["preprocessing.intensity"]
    wf = parse_workflow(r.workflow, source="plan")
    image = np.asarray(
        eval_transforms(wf, with_label=False)({"image": str(studies["binary"].parent / "binary_0.nii.gz")})[
            "image"
        ]
    )
    values = np.unique(np.round(image, 4))
    # vessel (> 0) and background (< 0) stay apart; 0 is only the padding to the planned spatial_size
    assert (values < 0).sum() == 1 and (values > 0).sum() == 1
    refused = parse_workflow(
        r.workflow
        | {"preprocessing": r.workflow["preprocessing"] | {"intensity": {"mode": "zscore", "nonzero": True}}},
        "x",
    )
    erased = np.asarray(
        eval_transforms(refused, with_label=False)(
            {"image": str(studies["binary"].parent / "binary_0.nii.gz")}
        )["image"]
    )
    assert np.abs(erased).max() == 0.0  # what the old plan fed the network: nothing


def test_grey_images_keep_the_nonzero_rule(studies):
    fp, r = _plan(studies["grey"])
    assert fp["intensity"]["constant_nonzero_fraction"] == 0.0
    nonzero = fp["intensity"]["zero_fraction_median"] > 0.25
    assert r.get("preprocessing.intensity") == {"mode": "zscore", "nonzero": nonzero}
    assert "binary" not in r.reasons["preprocessing.intensity"]
