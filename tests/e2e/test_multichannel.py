"""4D images (multi-echo, multi-contrast) are read as channels when the workflow says how many."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from _tiny import tiny_workflow, write_wf

from medimg.cli.main import main
from medimg.data.loading import check_channels
from medimg.errors import DataError

AFFINE = np.array([[-1.6, 0.1, 0, 20.0], [0.05, 1.7, 0, -14.0], [0, 0, 2.5, 8.0], [0, 0, 0, 1]])
SHAPE = (26, 24, 14)


def _two_contrast_case(folder: Path, i: int, rng: np.random.Generator) -> dict[str, str]:
    """Channel 0 shows a bright box where the label is; channel 1 is noise the model must not need."""
    label = np.zeros(SHAPE, np.uint8)
    x0, y0, z0 = 6 + i % 5, 5 + i % 4, 3 + i % 3
    label[x0 : x0 + 9, y0 : y0 + 8, z0 : z0 + 6] = 1
    image = np.stack([label * 100.0 + rng.normal(0, 5, SHAPE), rng.normal(0, 30, SHAPE)], axis=-1)
    img_path, lab_path = folder / f"case{i}_image.nii.gz", folder / f"case{i}_label.nii.gz"
    nib.save(nib.Nifti1Image(image.astype(np.float32), AFFINE), img_path)
    nib.save(nib.Nifti1Image(label, AFFINE), lab_path)
    split = "test" if i >= 8 else "val" if i >= 6 else "train"
    return {"case_key": f"c{i}", "patient_key": f"p{i}", "image": img_path.name, "label": lab_path.name,
            "split": split}  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("multichannel")
    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    rows = [_two_contrast_case(data, i, rng) for i in range(10)]
    pd.DataFrame(rows).to_csv(data / "manifest.csv", index=False)
    return root


def _workflow(root: Path, channels: int) -> Path:
    wf = tiny_workflow(
        name="two_contrast",
        data={"manifest": "data/manifest.csv", "labels": {0: "background", 1: "box"}, "channels": channels},
        preprocessing={"spacing": [2.5, 2.5, 2.5], "intensity": {"mode": "zscore"}},
        trainer={"max_epochs": 3},
        outputs={"dir": "runs/two_contrast"},
    )
    return write_wf(root / f"wf{channels}.yaml", wf)


def test_two_channel_study_trains_and_predicts_on_the_source_grid(study: Path, monkeypatch) -> None:
    monkeypatch.chdir(study)
    assert main(["run", str(_workflow(study, 2)), "--check"]) == 0
    assert main(["run", str(_workflow(study, 2))]) == 0
    model = study / "runs/two_contrast/model"
    image = study / "data/case9_image.nii.gz"
    assert main(["predict", str(model), str(image), "--out", "pred", "--no-progress"]) == 0
    mask = nib.load(next((study / "pred").rglob("mask.nii.gz")))
    assert mask.shape == SHAPE  # the 4D input's spatial grid, one mask for the two channels
    np.testing.assert_allclose(mask.affine, AFFINE, atol=1e-5)
    assert int(np.asarray(mask.dataobj).max()) <= 1


def test_a_4d_image_without_data_channels_is_refused_by_check(study: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(study)
    assert main(["run", str(_workflow(study, 1)), "--check"]) != 0
    err = capsys.readouterr().err
    assert "case0_image.nii.gz: image has 4 dimensions" in err and "data.channels" in err
    assert "Traceback" not in err


def test_channel_count_must_match_exactly() -> None:
    check_channels("a.nii.gz", (8, 8, 4, 2), 3, 2)
    check_channels("a.nii.gz", (8, 8, 4), 3, 1)
    with pytest.raises(
        DataError, match=r"a.nii.gz: image has 4 dimensions \(8, 8, 4, 3\); expected .*2 volumes"
    ):
        check_channels("a.nii.gz", (8, 8, 4, 3), 3, 2)
    with pytest.raises(DataError, match="expected a 3D volume with 2 volumes"):
        check_channels("a.nii.gz", (8, 8, 4), 3, 2)
