"""Explaining works on every volume prediction works on, for every registered network.

Inputs have sides that are not multiples of any network's total stride, and an oblique,
anisotropic grid; the workflow's preprocessing resamples them, segmentation networks run over
the prediction's sliding windows, and every map must land on the input's own grid (shape and
affine). Networks are randomly initialised and small (SwinUNETR at its smallest feature size).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from medimg.config.load import parse_workflow
from medimg.explain.maps import compute_saliency
from medimg.explain.runner import ExplainCase, explain_cohort
from medimg.explain.windows import WindowedNetwork, WindowPlan, target_region, window_plan, windowed_saliency
from medimg.inference.model_io import TrainedModel
from medimg.inference.predictor import Predictor
from medimg.models.networks import build_model

torch.set_num_threads(1)

#: An oblique (rotated about z and x), anisotropic grid: 0.9 x 1.3 x 2.1 mm voxels.
_C, _S = np.cos(0.3), np.sin(0.3)
OBLIQUE = np.array(
    [
        [0.9 * _C, -1.3 * _S, 0.2, -30.0],
        [0.9 * _S, 1.3 * _C, -0.3, 12.0],
        [0.0, 0.2, 2.1, 40.0],
        [0, 0, 0, 1.0],
    ]
)
SHAPE = (45, 37, 23)  # 40 x 48 x 48 mm: resampled to 1.5 mm, about 27 x 32 x 32 voxels, oblique

SEGMENTATION = {
    "unet": {"channels": [8, 16, 32, 64, 128], "strides": [2, 2, 2, 2], "num_res_units": 1},
    "dynunet": {"kernel_size": [3, 3, 3, 3], "strides": [1, 2, 2, 2], "filters": [8, 16, 32, 64]},
    "segresnet": {"init_filters": 8, "blocks_down": [1, 1, 1, 1]},
    "swinunetr": {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]},
    "flexunet": {"backbone": "resnet18", "decoder_channels": [32, 16, 16, 8, 8]},
}
CLASSIFICATION = {
    "densenet121": {"init_features": 8, "growth_rate": 8, "block_config": [2, 2]},
    "resnet10": {"widen_factor": 0.25},
    "efficientnet-b0": {},
    "patchnet": {},
    "segresnet-classifier": {"init_filters": 8, "blocks_down": [1, 1, 1, 1]},
    "swinunetr-classifier": {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]},
}
FAST_PARAMS = {
    "integrated-gradients": {"steps": 2, "batch_size": 2},
    "smoothgrad": {"samples": 2, "batch_size": 2},
    "occlusion": {"mask_size": 12, "overlap": 0.0, "batch_size": 8},
}
SEG_FAST_PARAMS = {
    "uncertainty": {"passes": 2},
    "seg-integrated-gradients": {"steps": 2, "batch_size": 2},
    "seg-smoothgrad": {"samples": 2, "batch_size": 2},
}


def _workflow(name: str, params: dict, task: str, roi: list[int] | None = None):
    wf = {
        "name": f"any_shape_{name}",
        "task": task,
        "data": {"manifest": "unused.csv", "labels": {0: "background", 1: "organ", 2: "lesion"}},
        "preprocessing": {"orientation": "RAS", "spacing": [1.5, 1.5, 1.5], "cache": {"mode": "none"}},
        "augmentation": {"patch_size": [32, 32, 32]},
        "model": {"name": name, "params": params},
        "inference": {"overlap": 0.25, "sw_batch_size": 2, "blend": "gaussian"},
    }
    if roi:
        wf["inference"]["roi_size"] = roi
    return parse_workflow(wf, source="test")


def _scan(folder, shape=SHAPE, affine=OBLIQUE, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.normal(0, 1, shape).astype(np.float32)
    img[10:25, 8:20, 5:14] += 3.0  # a bright, off-centre block
    path = folder / f"scan_{'x'.join(map(str, shape))}.nii.gz"
    nib.save(nib.Nifti1Image(img, affine), str(path))
    return path


def _trained(name: str, params: dict, task: str, roi: list[int] | None = None) -> TrainedModel:
    if name == "swinunetr":
        roi = roi or [64, 64, 64]  # five stride-2 stages: a 32-voxel window leaves 1 voxel to normalise
    torch.manual_seed(0)
    wf = _workflow(name, params, task, roi)
    return TrainedModel(build_model(wf).eval(), wf, None, "0" * 64, "test")


def _explain_one(tm: TrainedModel, scan, methods, params, out) -> dict[str, str]:
    """Explain one scan the way ``medimg explain`` does (no sanity checks); the failures."""
    res = explain_cohort(
        [ExplainCase("c1", scan)], tm.model, out, methods, task=tm.task, preprocess=tm.preprocess,
        workflow=tm.workflow, sanity=False, progress=False, method_params=params,
    )  # fmt: skip
    return res.failures


def _assert_maps_on_input_grid(out, case: str, methods, shape, affine, nonzero=()) -> None:
    """Each map has the input's shape and affine, is finite, and those in ``nonzero`` are not all zero.

    (A ReLU'd Grad-CAM or an occlusion map of a randomly initialised network may be all zero.)
    """
    for method in methods:
        img = nib.load(str(out / case / f"{method.replace('++', '_pp').replace('-', '_')}.nii.gz"))
        assert img.shape == tuple(shape), method
        np.testing.assert_allclose(img.affine, affine, atol=1e-5, err_msg=method)
        data = np.asarray(img.dataobj)
        assert np.isfinite(data).all(), method
        assert method not in nonzero or float(np.abs(data).max()) > 0, f"{method}: empty map"


@pytest.mark.parametrize("name", sorted(SEGMENTATION))
def test_segmentation_networks_explain_odd_oblique_volumes(tmp_path, name):
    tm = _trained(name, SEGMENTATION[name], "segmentation")
    scan = _scan(tmp_path)
    grid = tuple(tm.preprocess(str(scan))[0].shape[1:])
    assert any(s % 16 for s in grid), grid  # the model grid is not a multiple of the stride
    methods = ["seg-gradcam", "seg-integrated-gradients", "seg-smoothgrad", "uncertainty"]
    assert _explain_one(tm, scan, methods, SEG_FAST_PARAMS, tmp_path / "out") == {}
    nonzero = ["seg-integrated-gradients", "seg-smoothgrad", "uncertainty"]
    _assert_maps_on_input_grid(tmp_path / "out", "c1", methods, SHAPE, OBLIQUE, nonzero=nonzero)


def test_unet_cohort_with_sanity_checks_and_windows_smaller_than_the_volume(tmp_path):
    # roi 16 x 32 x 48: several windows along x, one along y, padding along z
    tm = _trained("unet", SEGMENTATION["unet"], "segmentation", roi=[16, 32, 48])
    scans = [_scan(tmp_path), _scan(tmp_path, (31, 26, 19), np.diag([1.7, 1.1, 2.3, 1.0]), seed=1)]
    res = explain_cohort(
        [ExplainCase(f"c{i}", s) for i, s in enumerate(scans)], tm.model, tmp_path / "out",
        ["seg-gradcam", "uncertainty"], task="segmentation", preprocess=tm.preprocess,
        workflow=tm.workflow, faithfulness_steps=3, progress=False,
    )  # fmt: skip
    assert res.failures == {}
    _assert_maps_on_input_grid(tmp_path / "out", "c0", ["seg-gradcam"], SHAPE, OBLIQUE)
    _assert_maps_on_input_grid(
        tmp_path / "out", "c1", ["seg-gradcam"], (31, 26, 19), np.diag([1.7, 1.1, 2.3, 1.0])
    )
    page = (tmp_path / "out" / "c0" / "report.html").read_text()
    assert "16x32x48 window" in page and "deletion AUC" in page


def test_windowed_probabilities_are_the_predictors():
    tm = _trained("unet", SEGMENTATION["unet"], "segmentation")
    x = torch.randn(1, 1, 41, 29, 35)
    plan = window_plan(tm.workflow, tm.model, tuple(x.shape[2:]))
    assert plan.roi == (32, 32, 32) and plan.overlap == 0.25 and plan.blend == "gaussian"
    ours = torch.softmax(WindowedNetwork(tm.model, plan)(x), 1)
    theirs = Predictor(tm.model, tm.workflow, device="cpu").probabilities(x)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_one_window_map_equals_the_direct_map():
    # when one window covers the volume exactly, the stitched map is the method's own map
    torch.manual_seed(0)
    tm = _trained("unet", SEGMENTATION["unet"], "segmentation")
    x = torch.randn(1, 1, 32, 32, 32)
    plan = WindowPlan((32, 32, 32), 0.0, "constant", 1)
    region, how = target_region(tm.model, x, plan, 1)
    assert how == "predicted" and 0 < region.sum() < region.size
    windowed = windowed_saliency(tm.model, x, "seg-gradcam", plan, label=1)
    direct = compute_saliency(tm.model, x, "seg-gradcam", label=1, region=region)
    assert windowed.params["layer"] == direct.params["layer"]
    np.testing.assert_allclose(windowed.array, direct.array, rtol=1e-4, atol=1e-6 * float(direct.array.max()))


def test_window_without_target_contributes_nothing():
    tm = _trained("unet", SEGMENTATION["unet"], "segmentation")
    x = torch.randn(1, 1, 64, 32, 32)
    region = np.zeros((64, 32, 32), bool)
    region[4:12, 10:20, 10:20] = True  # only inside the first of the two 32-voxel windows
    plan = WindowPlan((32, 32, 32), 0.0, "constant", 2)
    m = windowed_saliency(tm.model, x, "seg-gradcam", plan, label=1, region=region)
    assert m.params["windows_with_target"] == 1 and m.target["region"] == "given"
    assert float(np.abs(m.array[32:]).max()) == 0.0 and float(m.array[:32].max()) > 0


@pytest.mark.parametrize("name", sorted(CLASSIFICATION))
def test_classification_networks_explain_odd_oblique_volumes(tmp_path, name):
    tm = _trained(name, CLASSIFICATION[name], "classification")
    shape = (91, 75, 41) if name.startswith("efficientnet") else SHAPE  # b0 needs >= 64 voxels a side
    scan = _scan(tmp_path, shape)
    methods = ["gradcam", "gradcam++", "integrated-gradients", "smoothgrad", "occlusion"]
    assert _explain_one(tm, scan, methods, FAST_PARAMS, tmp_path / "out") == {}
    gradients = ["integrated-gradients", "smoothgrad"]
    _assert_maps_on_input_grid(tmp_path / "out", "c1", methods, shape, OBLIQUE, nonzero=gradients)


def test_windowed_integrated_gradients_keep_completeness():
    # one window covering the volume: the signed attributions add up to score(x) - score(baseline).
    # Batch norm (an affine map in eval mode): instance norm makes the network nearly blind to the
    # path's scaling, so its score jumps near the baseline, where no finite rule integrates it.
    from medimg.explain.targets import region_label_score

    tm = _trained("unet", {**SEGMENTATION["unet"], "norm": "BATCH"}, "segmentation")
    x = torch.randn(1, 1, 32, 32, 32)
    plan = WindowPlan((32, 32, 32), 0.0, "constant", 1)
    region, _how = target_region(tm.model, x, plan, 1)
    m = windowed_saliency(
        tm.model, x, "seg-integrated-gradients", plan, label=1, steps=64, batch_size=8, mode="signed"
    )
    score = region_label_score(1, region)
    with torch.no_grad():
        gap = float(score(tm.model(x))[0] - score(tm.model(torch.zeros_like(x)))[0])
    assert abs(float(m.array.sum()) - gap) < 0.05 * abs(gap)
