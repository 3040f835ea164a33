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


class AnchorGridBlob(BrightestBlob):
    """A stand-in detector whose box centre snaps to the nearest point of a grid of ``step`` voxels
    (an anchor grid's phase error): the error depends on where the lesion sits on that grid."""

    def __init__(self, step: int) -> None:
        super().__init__(np.zeros(3))
        self.step = step

    def __call__(
        self, images: list[torch.Tensor], use_inferer: bool = False
    ) -> list[dict[str, torch.Tensor]]:
        out = super().__call__(images)
        box = out[0]["boxes"].numpy()[0]
        centre = (box[:3] + box[3:]) / 2
        move = np.floor(centre / self.step + 0.5) * self.step - centre  # halves up
        out[0]["boxes"] = torch.tensor((box + np.concatenate([move, move]))[None], dtype=torch.float32)
        return out


def test_the_test_time_shift_puts_the_anchors_on_their_other_phase() -> None:
    plan = plan_detection([(8, 8, 8)], [(1.0, 1.0, 1.0)], [(24, 20, 12)])
    assert plan.tta_shift == (2, 2, 2)  # half the finest level's stride (conv1 2 x max pool 2)
    data = np.zeros((24, 20, 12), np.float32)
    data[4:14, 6:15, 2:9] = 1.0  # centre (8.5, 10, 5)
    truth = np.array([8.5, 10.0, 5.0])
    half = np.array([1, 1, 1])  # a grid of 2 voxels and its other phase (boxes 2 apart still fuse)
    found = {}
    for shift in ((0, 0, 0), tuple(half)):
        raw = {**plan.to_dict(), "patch_size": (24, 20, 12), "flip_tta": True, "tta_shift": shift}
        corners, scores = detect_array(AnchorGridBlob(2), data, type(plan).from_dict(raw))
        found[any(shift)] = (corners[0, :3] + corners[0, 3:]) / 2
        # each pass's snapped centre, worked out here: on the flipped array voxel i is n - 1 - i, and
        # the shifted scan has the lesion at i + shift
        passes = []
        for t in {(0, 0, 0), shift}:
            for axes in FLIPS:
                c = truth + np.array(t)
                for a in axes:
                    c[a] = data.shape[a] - 1 - c[a]
                c = np.floor(c / 2 + 0.5) * 2
                for a in axes:
                    c[a] = data.shape[a] - 1 - c[a]
                passes.append(c - np.array(t))
        assert len(passes) == (16 if any(shift) else 8)
        np.testing.assert_allclose(found[any(shift)], np.mean(passes, axis=0), atol=1e-4)
        assert scores.tolist() == pytest.approx([0.9])
    # on this lesion the flips alone leave half a voxel of error; the other phase cancels it
    err = {k: np.abs(v - truth) for k, v in found.items()}
    assert err[False].max() >= 0.25 and np.all(err[True] <= 1e-4)
