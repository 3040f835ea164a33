"""Predictions land on the input's own grid: same shape, same affine, same place in the patient.

A thresholding "network" makes the expected answer known exactly, so any flip,
transpose or offset anywhere in preprocessing → sliding window → resampling shows.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from medimg.config.load import parse_workflow
from medimg.data.synthetic import oblique_affine
from medimg.inference.predictor import Predictor


class Threshold(torch.nn.Module):
    """Two-class logits: foreground where the input exceeds ``t``."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.t - x, x - self.t], 1) * 10


def _workflow(orientation: str, tta: bool):
    return parse_workflow(
        {
            "task": "segmentation",
            "data": {"manifest": "unused.csv", "labels": {0: "background", 1: "box"}},
            "preprocessing": {
                "orientation": orientation,
                "spacing": [2.0, 2.0, 2.0],
                "intensity": {"mode": "none"},
            },
            "augmentation": {"patch_size": [24, 24, 24]},
            "inference": {"overlap": 0.5, "sw_batch_size": 2, "tta_flips": tta},
        }
    )


def _centroid_mm(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    idx = np.argwhere(mask > 0).mean(0)
    return affine[:3, :3] @ idx + affine[:3, 3]


@pytest.mark.parametrize(("orientation", "tta"), [("RAS", False), ("LPS", True)])
def test_mask_has_input_shape_affine_and_position(tmp_path, orientation, tta):
    shape = (40, 36, 24)
    affine = oblique_affine(shape, (1.2, 1.5, 3.0), 17.0, axis=(0.3, 1.0, 0.5))
    truth = np.zeros(shape, np.uint8)
    truth[5:21, 8:31, 3:13] = 1  # asymmetric and off-centre: a flip or transpose cannot hide
    path = tmp_path / "box.nii.gz"
    nib.save(nib.Nifti1Image(truth.astype(np.float32) * 100, affine), path)

    pred = Predictor(Threshold(50.0), _workflow(orientation, tta), device="cpu").predict_path(str(path))
    src = nib.load(path)
    assert pred.mask.shape == src.shape
    np.testing.assert_array_equal(pred.source_affine, src.affine)
    dice = 2 * np.logical_and(pred.mask, truth).sum() / (pred.mask.sum() + truth.sum())
    assert dice > 0.85
    shift = np.linalg.norm(_centroid_mm(pred.mask, src.affine) - _centroid_mm(truth, src.affine))
    assert shift < 1.0  # mm


def test_classification_probabilities(tmp_path):
    wf = parse_workflow(
        {
            "task": "classification",
            "data": {"manifest": "x.csv"},
            "preprocessing": {"spacing": None, "intensity": {"mode": "none"}, "spatial_size": [8, 8, 8]},
        }
    )

    class Mean(torch.nn.Module):
        def forward(self, x):
            m = x.mean(dim=(1, 2, 3, 4))
            return torch.stack([-m, m], 1)

    nib.save(nib.Nifti1Image(np.full((8, 8, 8), 2.0, np.float32), np.eye(4)), tmp_path / "a.nii.gz")
    pred = Predictor(Mean(), wf, device="cpu").predict_path(str(tmp_path / "a.nii.gz"))
    np.testing.assert_allclose(pred.probs, torch.softmax(torch.tensor([-2.0, 2.0]), 0).numpy(), atol=1e-5)
