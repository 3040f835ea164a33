"""ONNX export: numerically equivalent to torch, atomic, and usable as the Predictor's network."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from medimg.errors import WeightsError
from medimg.inference.onnx_export import OnnxNetwork, check_equivalence, export_onnx


def test_export_matches_torch_on_other_sizes(tmp_path, tiny_unet) -> None:
    path, diff = export_onnx(tiny_unet, tmp_path / "net.onnx", roi_size=(16, 16, 16))
    assert path.is_file() and diff < 1e-4
    onnx_net = OnnxNetwork(path, threads=1)
    x = torch.randn(3, 1, 24, 16, 32)  # batch and spatial size differ from the export's
    assert onnx_net(x).shape == (3, 3, 24, 16, 32)
    assert check_equivalence(tiny_unet, onnx_net, x) < 1e-4


def test_export_refuses_a_difference_and_leaves_no_file(tmp_path, tiny_unet) -> None:
    with pytest.raises(WeightsError, match="differs from torch"):
        export_onnx(tiny_unet, tmp_path / "net.onnx", roi_size=(16, 16, 16), atol=0.0)
    assert list(tmp_path.iterdir()) == []


def test_broken_file_is_a_weights_error(tmp_path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(WeightsError, match="bad.onnx"):
        OnnxNetwork(bad)


def test_predictor_on_onnx_gives_the_torch_mask(tmp_path, tiny_unet) -> None:
    from medimg.config.load import parse_workflow
    from medimg.data.synthetic import oblique_affine
    from medimg.inference.predictor import Predictor

    wf = parse_workflow(
        {
            "task": "segmentation",
            "data": {"manifest": "unused.csv", "labels": {0: "background", 1: "a", 2: "b"}},
            "preprocessing": {
                "orientation": "RAS",
                "spacing": [2.0, 2.0, 2.0],
                "intensity": {"mode": "minmax"},
            },
            "augmentation": {"patch_size": [16, 16, 16]},
            "inference": {"overlap": 0.25, "sw_batch_size": 2},
        }
    )
    shape = (30, 26, 14)
    rng = np.random.default_rng(0)
    img = tmp_path / "scan.nii.gz"
    nib.save(
        nib.Nifti1Image(
            rng.normal(size=shape).astype(np.float32), oblique_affine(shape, (1.2, 1.4, 3.0), 11.0)
        ),
        img,
    )
    path, _ = export_onnx(tiny_unet, tmp_path / "net.onnx", roi_size=(16, 16, 16))
    ref = Predictor(tiny_unet, wf, device="cpu").predict_path(str(img))
    got = Predictor(OnnxNetwork(path, threads=1), wf, device="cpu").predict_path(str(img))
    assert got.mask.shape == shape
    np.testing.assert_allclose(got.source_affine, ref.source_affine)
    assert (got.mask != ref.mask).mean() < 1e-3
