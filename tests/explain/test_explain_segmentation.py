"""explain_cohort for a segmentation network: Seg-Grad-CAM + uncertainty over windows, stated, volumes."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import torch

from medimg.explain.runner import ExplainCase, explain_cohort

torch.set_num_threads(1)


def test_segmentation_cohort_without_workflow_uses_one_padded_window(tmp_path):
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(3, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=0).eval()
    affine = np.array([[1.2, 0.1, 0, -20], [0, 0.9, -0.2, 5], [0.1, 0, 2.0, 30], [0, 0, 0, 1.0]])
    rng = np.random.default_rng(0)
    cases = []
    for i in range(2):
        img = rng.normal(0, 1, (30, 33, 29)).astype(np.float32)
        img[8:16, 10:20, 12:18] += 3
        nib.save(nib.Nifti1Image(img, affine), str(tmp_path / f"s{i}.nii.gz"))
        cases.append(ExplainCase(f"seg_{i}", tmp_path / f"s{i}.nii.gz"))
    res = explain_cohort(
        cases,
        net,
        tmp_path / "out",
        ["seg-gradcam", "uncertainty"],
        task="segmentation",
        label=1,
        voxel_budget=16**3,
        faithfulness_steps=4,
        progress=False,
    )
    assert res.exit_code == 0 and len(res.reports) == 2
    for method in ("seg_gradcam", "uncertainty"):
        img = nib.load(str(tmp_path / "out" / "seg_0" / f"{method}.nii.gz"))
        assert img.shape == (30, 33, 29)
        np.testing.assert_allclose(img.affine, affine, atol=1e-6)
    page = (tmp_path / "out" / "seg_0" / "report.html").read_text()
    # no workflow: one window, the volume padded to 64x64x32 (multiples of 32) and cropped back;
    # the voxel budget is for classification maps (windows bound a segmentation map's memory)
    assert "computed inside each 32x64x32 window" in page and "budget" not in page
    assert "segmented volume (mL)" in page and "Through the lesion/organ centre" in page
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    row = summary["cases"][0]
    assert "spearman" in row["methods"]["seg-gradcam"] and "spearman" not in row["methods"]["uncertainty"]
    window = {"roi": [32, 64, 32], "overlap": 0.0, "blend": "constant"}
    assert row["methods"]["uncertainty"]["params"] == {"mode": "flip", "passes": 8, "windows": window}
    assert row["methods"]["seg-gradcam"]["params"]["windows"] == window
