"""patchnet: a classifier with a bounded receptive field whose evidence comes from one place."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medimg.errors import ConfigError
from medimg.explain.layers import default_target_layer, feature_grid
from medimg.models.networks import build_network, encoder_prefixes, head_prefixes


def _support(net: nn.Module, x: torch.Tensor, score) -> tuple[int, int]:
    """Height and width of the box of input pixels that ``score(net, x)`` depends on."""
    grad = torch.autograd.functional.jacobian(lambda t: score(net, t), x)[0, 0] != 0
    rows, cols = grad.any(1).nonzero(), grad.any(0).nonzero()
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


@pytest.mark.parametrize(
    "params,rf,stride",
    [
        ({}, 10, 2),
        ({"channels": [8, 8, 8, 8], "pools": [1, 3]}, 22, 4),
        ({"channels": [4, 4], "pools": []}, 5, 1),
    ],
)
def test_receptive_field_and_stride_are_what_the_network_says(params, rf, stride):
    """All weights positive, pools averaged, a positive input: every path is active, so the
    gradient support of the central cell is exactly its receptive field."""
    net = build_network("patchnet", spatial_dims=2, in_channels=1, out_channels=2, input_range=None, **params)
    assert (net.receptive_field, net.output_stride) == (rf, stride)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.constant_(m.weight, 0.1)
    net.features = nn.Sequential(
        *[nn.AvgPool2d(2) if isinstance(m, nn.MaxPool2d) else m for m in net.features]
    )

    def centre_cell(model: nn.Module, t: torch.Tensor) -> torch.Tensor:
        out = model.features(t)
        return out[0, :, out.shape[-2] // 2, out.shape[-1] // 2].sum()

    assert _support(net, torch.ones(1, 1, 64, 64), centre_cell) == (rf, rf)


def test_grid_default_layer_and_parts():
    net = build_network("patchnet", in_channels=2, out_channels=3).eval()
    x = torch.zeros(1, 2, 24, 24, 24)
    assert default_target_layer(net, x) == net.cam_layer == "features.5"  # the last convolution
    g = feature_grid(net, "features.5", x)  # one 2x pool: cell i centred between inputs 2i and 2i+1
    assert g.traced and g.stride == (2.0,) * 3 and g.offset == (0.5,) * 3
    with torch.no_grad():
        assert net(x).shape == (1, 3)
    assert head_prefixes("patchnet", net) == ["fc."] and encoder_prefixes("patchnet", net) == ["features."]


def test_max_pooling_decides_each_channel_in_one_cell_and_inputs_are_centred():
    kw = {"spatial_dims": 2, "in_channels": 1, "out_channels": 2}
    net = build_network("patchnet", **kw).eval()
    x = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))

    def one_channel(model: nn.Module, t: torch.Tensor) -> torch.Tensor:  # a pooled feature channel
        return model.pooled_features(t)[0, 3]

    rows, cols = _support(net, x, one_channel)
    assert 0 < rows <= 10 and 0 < cols <= 10  # one cell's receptive field
    avg = build_network("patchnet", pool="avg", **kw).eval()
    avg.load_state_dict(net.state_dict())
    assert _support(avg, x, one_channel) == (64, 64)  # averaging: every cell
    # [0, 1] inputs (ct_window, minmax) are mapped to [-1, 1] before the first convolution
    plain = build_network("patchnet", input_range=None, **kw).eval()
    plain.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(net(x), plain(2 * x - 1))


def test_bad_parameters_name_the_parameter():
    with pytest.raises(ConfigError, match=r"pools must list convolutions \(1..2\)"):
        build_network("patchnet", in_channels=1, out_channels=2, channels=[8, 16, 16], pools=[3])
    with pytest.raises(ConfigError, match="pool must be 'max' or 'avg', got 'lse'"):
        build_network("patchnet", in_channels=1, out_channels=2, pool="lse")
    with pytest.raises(ConfigError, match="input_range must be"):
        build_network("patchnet", in_channels=1, out_channels=2, input_range=[1, 0])
