"""Saliency methods on a classifier trained on the synthetic cube task, and on small MONAI networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medimg.errors import ConfigError
from medimg.explain import available_methods, compute_saliency
from medimg.explain.layers import default_target_layer
from medimg.explain.sanity import (
    deletion_insertion,
    map_similarity,
    randomisation_test,
    randomise_weights,
    sanity_verdict,
)
from medimg.explain.targets import class_probability_score
from medimg.explain.uncertainty import uncertainty_map

torch.set_num_threads(1)


def _positives(test_cases):
    x, y, masks = test_cases
    return [(x[i : i + 1], masks[i]) for i in range(len(y)) if int(y[i]) == 1]


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_cam_peak_inside_cube_on_90_percent_of_positives(trained_classifier, test_cases, method):
    positives = _positives(test_cases)
    assert len(positives) == 10
    hits = 0
    for x, mask in positives:
        m = compute_saliency(trained_classifier, x, method, target_class=1)
        assert m.array.shape == (24, 24, 24) and m.array.dtype == np.float32
        assert m.params["layer"] == "features.5"  # fallback: last Conv3d
        hits += bool(mask[m.peak_index])
    assert hits / len(positives) >= 0.9, f"{method}: peak inside the cube on {hits}/{len(positives)} cases"


def test_randomisation_test_shows_low_similarity_for_trained_model(trained_classifier, test_cases):
    rnd = randomise_weights(trained_classifier, seed=3)
    # the trained model is untouched by randomisation
    assert not torch.equal(rnd.head.weight, trained_classifier.head.weight)
    rhos, ssims = [], []
    for x, _mask in _positives(test_cases)[:5]:
        r = randomisation_test(
            trained_classifier,
            x,
            lambda m, v: compute_saliency(m, v, "gradcam", target_class=1),
            randomised_model=rnd,
        )
        rhos.append(r.spearman)
        ssims.append(r.ssim)
        assert r.passed
    assert np.mean(rhos) < 0.5, rhos
    assert np.mean(ssims) < 0.5, ssims
    # the same map against itself is perfectly similar: the measure is not trivially low
    m = compute_saliency(trained_classifier, _positives(test_cases)[0][0], "gradcam", target_class=1)
    rho, ssim = map_similarity(m.array, m.array)
    assert rho == pytest.approx(1.0) and ssim == pytest.approx(1.0)


def test_cascading_randomisation_only_touches_top_layers(trained_classifier):
    rnd = randomise_weights(trained_classifier, seed=1, cascade_steps=1)
    assert not torch.equal(rnd.head.weight, trained_classifier.head.weight)
    assert torch.equal(rnd.features[0].weight, trained_classifier.features[0].weight)


def test_deletion_is_faster_than_random_for_gradcam(trained_classifier, test_cases):
    x, _mask = _positives(test_cases)[0]
    m = compute_saliency(trained_classifier, x, "gradcam", target_class=1)
    f = deletion_insertion(trained_classifier, x, m, class_probability_score(1), steps=8)
    assert len(f.deletion) == len(f.insertion) == 9
    assert f.deletion[0] > 0.9  # nothing deleted: the model is confident
    assert f.deletion_auc < f.random_deletion_auc - 0.2
    assert f.insertion_auc > 0.6
    assert f.passed
    assert sanity_verdict(None, f).startswith("Faithful")


@pytest.mark.parametrize("method", ["integrated-gradients", "smoothgrad", "occlusion"])
def test_attribution_methods_find_the_cube(trained_classifier, test_cases, method):
    x, mask = _positives(test_cases)[1]
    params = {"steps": 8} if method == "integrated-gradients" else {}
    params = {"samples": 4} if method == "smoothgrad" else params
    params = {"mask_size": 6, "overlap": 0.5} if method == "occlusion" else params
    m = compute_saliency(trained_classifier, x, method, target_class=1, **params)
    assert m.array.shape == (24, 24, 24) and np.isfinite(m.array).all()
    # the map's mass concentrates on the cube: its mean inside is far above the mean outside
    assert m.array[mask].mean() > 3 * max(m.array[~mask].mean(), 1e-9)
    if method == "occlusion":
        assert mask[m.peak_index] or np.linalg.norm(np.subtract(m.peak_index, np.argwhere(mask).mean(0))) < 4


def test_voxel_budget_coarsens_and_says_so(trained_classifier, test_cases):
    x, _ = _positives(test_cases)[0]
    m = compute_saliency(
        trained_classifier, x, "gradcam", target_class=1, voxel_budget=16**3, size_multiple=4
    )
    assert m.array.shape == (24, 24, 24)
    assert "16x16x16 grid" in m.grid_note and "budget of 4096 voxels" in m.grid_note
    assert compute_saliency(trained_classifier, x, "gradcam", target_class=1).grid_note == ""


def test_unknown_method_and_class_are_clear_errors(trained_classifier, test_cases):
    x, _ = _positives(test_cases)[0]
    with pytest.raises(ConfigError, match="unknown saliency method 'gradcan'"):
        compute_saliency(trained_classifier, x, "gradcan")
    with pytest.raises(ConfigError, match="target class 5"):
        compute_saliency(trained_classifier, x, "gradcam", target_class=5)
    with pytest.raises(ConfigError, match="layer 'nope' not found"):
        compute_saliency(trained_classifier, x, "gradcam", layer="nope")
    assert {"gradcam", "gradcam++", "occlusion", "integrated-gradients", "smoothgrad"} <= set(
        available_methods("classification")
    )
    assert set(available_methods("segmentation")) == {
        "seg-gradcam",
        "seg-integrated-gradients",
        "seg-smoothgrad",
        "uncertainty",
    }


def test_one_algorithm_per_method_pair_with_each_names_target_and_defaults():
    import inspect

    from medimg.explain.maps import get_method

    def signature(name):
        fn, _task = get_method(name)
        return {n: p.default for n, p in list(inspect.signature(fn).parameters.items())[2:]}

    assert (
        get_method("integrated-gradients")[0].algorithm is get_method("seg-integrated-gradients")[0].algorithm
    )
    assert get_method("smoothgrad")[0].algorithm is get_method("seg-smoothgrad")[0].algorithm
    assert get_method("gradcam")[0].algorithm is get_method("seg-gradcam")[0].algorithm
    assert signature("integrated-gradients") == {
        "target_class": None,
        "steps": 32,
        "baseline": 0.0,
        "batch_size": 8,
        "mode": "positive",
    }
    assert signature("seg-integrated-gradients") == {
        "label": 1,
        "region": None,
        "steps": 16,
        "baseline": 0.0,
        "batch_size": 4,
        "mode": "positive",
    }
    assert signature("smoothgrad")["batch_size"] == 8 and signature("seg-smoothgrad")["batch_size"] == 4
    assert signature("gradcam") == {"target_class": None, "layer": None}
    assert signature("seg-gradcam") == {"label": 1, "region": None, "layer": None}
    assert signature("occlusion") == {
        "target_class": None,
        "mask_size": None,
        "overlap": 0.5,
        "batch_size": 8,
        "fill": "gaussian",
    }
    # a parameter of the other task's target is refused, as an unknown keyword always was
    net = nn.Sequential(nn.Conv3d(1, 2, 3), nn.AdaptiveAvgPool3d(1), nn.Flatten()).eval()
    with pytest.raises(TypeError, match="label"):
        compute_saliency(net, torch.zeros(1, 1, 8, 8, 8), "gradcam", label=1)


def test_default_layers_for_monai_families():
    from monai.networks.nets import DenseNet, resnet10

    dense = DenseNet(
        spatial_dims=3, in_channels=1, out_channels=2, init_features=4, growth_rate=4, block_config=(2, 2)
    )
    assert default_target_layer(dense) == "class_layers.relu"
    res = resnet10(spatial_dims=3, n_input_channels=1, num_classes=2)
    assert default_target_layer(res) == "layer4"
    x = torch.randn(1, 1, 16, 16, 16)
    # ResNet's layer4 map is 1x1x1 for a 16^3 input: the default gives way to a larger block
    assert default_target_layer(res.eval(), x) == "layer2"
    assert default_target_layer(res, torch.randn(1, 1, 64, 64, 64)) == "layer4"
    for net in (dense.eval(), res.eval()):
        m = compute_saliency(net, x, "gradcam", target_class=0)
        assert m.array.shape == (16, 16, 16) and np.isfinite(m.array).all()
    # hooks are removed after the call: nothing left registered on the network
    assert all(not mod._forward_hooks for mod in res.modules())


def _tiny_unet(dropout: float = 0.0) -> nn.Module:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(3, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=0, dropout=dropout).eval()


def test_seg_gradcam_uses_bottleneck_and_region():
    net = _tiny_unet()
    x = torch.randn(1, 1, 16, 16, 16)
    region = np.zeros((16, 16, 16), bool)
    region[2:6, 2:6, 2:6] = True
    m = compute_saliency(net, x, "seg-gradcam", label=1, region=region)
    assert m.array.shape == (16, 16, 16) and np.isfinite(m.array).all()
    assert m.target == {"label": 1, "region": "given"}
    layers = dict(net.named_modules())
    assert isinstance(layers[m.params["layer"]], nn.Conv3d)
    # the default layer is the deepest: its output has the fewest voxels (16 / 4 = 4 per side)
    out = {}

    def record(_m, _i, o):
        out["s"] = o.shape

    h = layers[m.params["layer"]].register_forward_hook(record)
    net(x)
    h.remove()
    assert tuple(out["s"][2:]) == (4, 4, 4)
    other = compute_saliency(net, x, "seg-gradcam", label=1, region=~region)
    assert float(m.array.max()) > 0
    assert not np.allclose(m.normalised(), other.normalised(), atol=1e-3)
    with pytest.raises(ConfigError, match="label 4 does not exist"):
        compute_saliency(net, x, "seg-gradcam", label=4)


def test_uncertainty_flip_and_mc_dropout():
    x = torch.randn(1, 1, 16, 16, 16)
    net = _tiny_unet()
    flip = uncertainty_map(net, x, label=1, mode="flip", passes=8)
    assert flip.array.shape == (16, 16, 16) and flip.params == {"mode": "flip", "passes": 8}
    assert 0 < float(flip.array.max()) <= 0.25  # a variance of probabilities
    # a flip-equivariant model (a 1x1x1 convolution) has zero flip variance
    pointwise = nn.Conv3d(1, 2, 1).eval()
    assert float(uncertainty_map(pointwise, x, mode="flip").array.max()) < 1e-10
    with pytest.raises(ConfigError, match="no dropout layer"):
        uncertainty_map(net, x, mode="mc-dropout")
    drop = _tiny_unet(dropout=0.3)
    mc = uncertainty_map(drop, x, label=1, mode="mc-dropout", passes=6)
    assert float(mc.array.max()) > 0
    assert not drop.training and all(not m.training for m in drop.modules())  # eval mode restored


@pytest.mark.gpu
def test_all_methods_run_on_cuda(trained_classifier, test_cases):
    import copy

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    model = copy.deepcopy(trained_classifier).cuda()
    x, mask = _positives(test_cases)[0]
    x = x.cuda()
    for method in ("gradcam", "gradcam++", "integrated-gradients", "smoothgrad", "occlusion"):
        m = compute_saliency(model, x, method, target_class=1)
        assert m.array.shape == (24, 24, 24) and np.isfinite(m.array).all()
    f = deletion_insertion(
        model, x, compute_saliency(model, x, "gradcam", target_class=1), class_probability_score(1), steps=4
    )
    assert f.deletion_auc < f.insertion_auc
    net = _tiny_unet().cuda()
    xs = torch.randn(1, 1, 16, 16, 16, device="cuda")
    assert compute_saliency(net, xs, "seg-gradcam", label=1).array.shape == (16, 16, 16)
    assert uncertainty_map(net, xs, label=1).array.shape == (16, 16, 16)
