"""The speed-ups change nothing: separable resampling, channel argmax and cached crop indices."""

from __future__ import annotations

from pathlib import Path

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
    from medimg.data.synthetic import SyntheticGrid, write_synthetic_study
    from medimg.data.transforms import train_transforms

    write_synthetic_study(tmp_path, cases=1, grid=SyntheticGrid(shape=(32, 32, 20)))
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


ORIENT_CASES = {
    "RAS already": np.eye(4),
    "LPS": np.diag([-1.0, -1.0, 1.0, 1.0]),
    "permuted, anisotropic": np.array([[0, 0, 2, 5], [1, 0, 0, 3], [0, 1.5, 0, 1], [0, 0, 0, 1.0]]),
}


def _case(affine: np.ndarray, shape=(1, 8, 9, 10)):
    from monai.data import MetaTensor

    vals = torch.tensor(np.random.default_rng(0).normal(size=shape), dtype=torch.float32)
    return {
        "image": MetaTensor(vals, affine=torch.tensor(affine)),
        "label": MetaTensor(vals > 0, affine=torch.tensor(affine)),
    }


@pytest.mark.parametrize("name", ORIENT_CASES)
@pytest.mark.parametrize("axcodes", ["RAS", "LPS"])
def test_orientation_skip_gives_monai_orientation(name, axcodes) -> None:
    """A case already in the target orientation passes untouched; any other is reoriented as MONAI does."""
    from monai import transforms as T

    from medimg.data.transforms import AXES, Orientd

    case = _case(ORIENT_CASES[name])
    ref = T.Orientationd(keys=("image", "label"), axcodes=axcodes, labels=AXES)(dict(case))
    got = Orientd(keys=("image", "label"), axcodes=axcodes, labels=AXES)(dict(case))
    for key in ("image", "label"):
        assert got[key].shape == ref[key].shape
        assert torch.equal(got[key].as_tensor(), ref[key].as_tensor())
        assert torch.allclose(got[key].affine.double(), ref[key].affine.double())
    skipped = (name, axcodes) == ("RAS already", "RAS") or (name, axcodes) == ("LPS", "LPS")
    assert (got["image"] is case["image"]) == skipped


@pytest.mark.parametrize("size", [(8, 9, 10), (8, -1, 12), (6, 9, 10), (12, 12, 12)])
def test_resize_skip_gives_monai_resize(size) -> None:
    """Padding/cropping to the size a case has is skipped; any other size is MONAI's pad or crop."""
    from monai import transforms as T

    from medimg.data.transforms import ResizeToSized

    case = _case(np.diag([2.0, 1.0, 3.0, 1.0]))
    ref = T.ResizeWithPadOrCropd(keys=("image", "label"), spatial_size=size)(dict(case))
    got = ResizeToSized(keys=("image", "label"), spatial_size=size)(dict(case))
    for key in ("image", "label"):
        assert tuple(got[key].shape) == tuple(ref[key].shape)
        assert torch.equal(got[key].as_tensor(), ref[key].as_tensor())
        assert torch.allclose(got[key].affine.double(), ref[key].affine.double())
    assert (got["image"] is case["image"]) == (size == (8, 9, 10))


HIPPO = Path.home() / ".cache/medimg-data/hippocampus"


@pytest.mark.skipif(
    not (HIPPO / "images").is_dir(),
    reason="MSD Hippocampus not prepared: run 'python -m benchmarks.bench_study_real prepare' (docs/benchmarks.md)",
)
def test_skips_equal_monai_on_real_hippocampus_scans() -> None:
    """On real MR (MSD Hippocampus), the skipping transforms give MONAI's voxels and affines."""
    from monai import transforms as T

    from medimg.data.transforms import AXES, Orientd, ResizeToSized

    keys = ("image", "label")
    load = T.Compose(
        [T.LoadImaged(keys=keys), T.EnsureChannelFirstd(keys=keys), T.EnsureTyped(keys=keys, track_meta=True)]
    )
    images = sorted((HIPPO / "images").glob("*.nii.gz"))[:10]
    skipped = 0
    for path in images:
        case = load({"image": str(path), "label": str(HIPPO / "labels" / path.name)})
        for axcodes in ("RAS", "LPS"):
            ref = T.Orientationd(keys=keys, axcodes=axcodes, labels=AXES)(dict(case))
            got = Orientd(keys=keys, axcodes=axcodes, labels=AXES)(dict(case))
            skipped += got["image"] is case["image"]
            for size in ((40, 56, 40), tuple(ref["image"].shape[1:])):
                r = T.ResizeWithPadOrCropd(keys=keys, spatial_size=size)(dict(ref))
                g = ResizeToSized(keys=keys, spatial_size=size)(dict(got))
                for key in keys:
                    assert torch.equal(g[key].as_tensor(), r[key].as_tensor()), (
                        path.name,
                        axcodes,
                        size,
                        key,
                    )
                    assert torch.allclose(g[key].affine.double(), r[key].affine.double())
    assert images and skipped == len(images)  # every case is stored RAS: each skipped once, for "RAS"
