"""The speed-ups change nothing: separable resampling, channel argmax and cached crop indices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medimg.inference.resample import (
    _grid_sample_slabs,
    argmax_channels,
    axis_aligned_mapping,
    resample_labels,
    resample_to_grid,
)


@pytest.mark.parametrize("seed", range(5))
def test_separable_resample_equals_grid_sample(seed) -> None:
    rng = np.random.default_rng(seed)
    vals = torch.softmax(torch.rand(3, 13, 17, 9) * 5, 0)
    lin = np.eye(3)[rng.permutation(3)] * rng.choice([-1, 1], 3)[:, None] * rng.uniform(0.4, 2.5, 3)[:, None]
    src = np.eye(4)
    src[:3, :3], src[:3, 3] = lin, rng.uniform(-5, 5, 3)
    dst = np.eye(4)
    dst[:3, :3], dst[:3, 3] = np.diag(rng.uniform(0.5, 3, 3)), rng.uniform(-4, 4, 3)
    shape = (23, 19, 15)
    assert axis_aligned_mapping(np.linalg.inv(src) @ dst) is not None
    ref = torch.empty(3, *shape)
    for x0, x1, res in _grid_sample_slabs(vals, np.linalg.inv(src) @ dst, shape, "bilinear", True, 7):
        ref[:, x0:x1] = res
    fast = resample_to_grid(vals, src, shape, dst, slab=5)
    assert float((fast - ref).abs().max()) < 1e-5
    assert np.array_equal(resample_labels(vals, src, shape, dst, slab=4), ref.argmax(0).numpy())


def test_oblique_mapping_uses_grid_sample() -> None:
    from medimg.data.synthetic import rotation_matrix

    m = np.eye(4)
    m[:3, :3] = rotation_matrix(np.array([1.0, 0.3, 0.2]), 10.0)
    assert axis_aligned_mapping(m) is None
    vals = torch.rand(2, 6, 6, 6)
    out = resample_to_grid(vals, np.eye(4), (6, 6, 6), m)
    assert out.shape == (2, 6, 6, 6)


def test_argmax_channels_matches_torch_with_ties() -> None:
    v = torch.randint(0, 3, (4, 5, 6, 7)).float()  # many ties: the first maximum must win
    assert torch.equal(argmax_channels(v).long(), v.argmax(0))


def test_cached_patch_indices_give_the_same_patches(tmp_path) -> None:
    from monai import transforms as T

    from medimg.config.load import parse_workflow
    from medimg.data.synthetic import write_synthetic_study
    from medimg.data.transforms import train_transforms

    write_synthetic_study(tmp_path, cases=1, shape=(32, 32, 20))
    wf = parse_workflow(
        {
            "task": "segmentation",
            "data": {
                "manifest": str(tmp_path / "manifest.csv"),
                "labels": {0: "bg", 1: "organ", 2: "kidney"},
            },
            "preprocessing": {
                "spacing": [2.0, 2.0, 2.0],
                "intensity": {"mode": "ct_window", "window": [-200, 300]},
            },
            "augmentation": {"patch_size": [16, 16, 16], "samples_per_volume": 3},
        }
    )
    item = {
        "image": str(tmp_path / "cases/case_0000/image.nii.gz"),
        "label": str(tmp_path / "cases/case_0000/label.nii.gz"),
    }
    with_idx = train_transforms(wf)
    assert any(isinstance(t, T.FgBgToIndicesd) for t in with_idx.transforms)
    without = T.Compose([t for t in train_transforms(wf).transforms if not isinstance(t, T.FgBgToIndicesd)])
    with_idx.set_random_state(3)
    without.set_random_state(3)
    a, b = with_idx(dict(item)), without(dict(item))
    assert len(a) == 3 and set(a[0]) == {"image", "label"}  # the index keys never reach a batch
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
