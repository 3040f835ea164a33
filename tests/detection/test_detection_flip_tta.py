"""Test-time flips: boxes found on flipped windows land back on the unflipped grid, and a regression
bias that flips with the image (as the anchor grid's offset does) cancels in the fused box."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medimg.detection.plan import plan_detection
from medimg.detection.predict import FLIPS, _flip_back, detect_array


class BrightestBlob:
    """A stand-in detector: one box around the voxels above half the maximum, shifted by ``bias``."""

    def __init__(self, bias: np.ndarray, score: float = 0.9) -> None:
        self.bias, self.score = bias, score

    def eval(self) -> BrightestBlob:
        return self

    def __call__(
        self, images: list[torch.Tensor], use_inferer: bool = False
    ) -> list[dict[str, torch.Tensor]]:
        data = images[0][0].numpy()
        idx = np.argwhere(data > data.max() / 2)
        corners = np.concatenate([idx.min(0) - 0.5 + self.bias, idx.max(0) + 0.5 + self.bias])
        return [
            {
                "boxes": torch.tensor(corners[None], dtype=torch.float32),
                "labels_scores": torch.tensor([self.score]),
            }
        ]


def _scan() -> np.ndarray:
    data = np.zeros((24, 20, 12), np.float32)
    data[5:10, 11:15, 3:6] = 1.0  # voxels 5-9, 11-14, 3-5: centre (7, 12.5, 4)
    return data


def test_flipped_boxes_come_back_onto_the_same_voxels() -> None:
    data = _scan()
    truth = np.array([4.5, 10.5, 2.5, 9.5, 14.5, 5.5])
    for axes in FLIPS:
        found = BrightestBlob(np.zeros(3))(
            [torch.from_numpy(np.ascontiguousarray(np.flip(data, axes)))[None]]
        )
        back = _flip_back(found[0]["boxes"].numpy(), axes, data.shape)
        np.testing.assert_allclose(back[0], truth, atol=1e-6)
    assert len(FLIPS) == 8 and len(set(FLIPS)) == 8


@pytest.mark.parametrize("flip_tta", [False, True])
def test_a_bias_that_flips_with_the_image_cancels_with_flips(flip_tta: bool) -> None:
    plan = plan_detection([(6, 6, 6)], [(1.0, 1.0, 1.0)], [(24, 20, 12)])
    plan = type(plan).from_dict({**plan.to_dict(), "patch_size": (24, 20, 12), "flip_tta": flip_tta})
    # voxels, in the (possibly flipped) array the detector sees; the 8 boxes overlap by IoU >= 0.55
    bias = np.array([0.3, -0.2, 0.15])
    corners, scores = detect_array(BrightestBlob(bias), _scan(), plan)
    centre = (corners[0, :3] + corners[0, 3:]) / 2
    if flip_tta:
        np.testing.assert_allclose(centre, (7.0, 12.5, 4.0), atol=1e-5)
        assert scores.tolist() == pytest.approx([0.9])  # every flip saw it: the mean of 8 best scores
    else:
        np.testing.assert_allclose(centre, np.array((7.0, 12.5, 4.0)) + bias, atol=1e-5)
