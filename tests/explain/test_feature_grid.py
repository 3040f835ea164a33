"""Maps read from a layer are drawn where that layer's cells look (traced feature grids)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medimg.explain import compute_saliency
from medimg.explain.layers import feature_grid
from medimg.explain.maps import place_on_grid, upsample_to
from medimg.models.networks import build_network


def _resnet10(**params: object) -> nn.Module:
    net = build_network(
        "resnet10", in_channels=1, out_channels=2, widen_factor=0.25, conv1_t_size=5, **params
    )
    return net.eval()


def test_grid_of_strided_convolutions_and_pools():
    net = nn.Sequential(nn.Conv3d(1, 2, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool3d(2))
    x = torch.zeros(1, 1, 16, 16, 16)
    g = feature_grid(net, "0", x)
    assert g.stride == (2.0,) * 3 and g.offset == (0.0,) * 3 and g.traced
    g = feature_grid(net, "2", x)  # a 2x2x2 pool centres its cell between two inputs
    assert g.stride == (4.0,) * 3 and g.offset == (1.0,) * 3
    up = nn.Sequential(nn.Conv3d(1, 2, 5, stride=4, padding=2), nn.ConvTranspose3d(2, 1, 2, stride=2))
    g = feature_grid(up, "1", x)  # two cells per strided cell, a quarter of its spacing either side
    assert g.stride == (2.0,) * 3 and g.offset == (-1.0,) * 3


def test_string_paddings():
    x = torch.zeros(1, 1, 16, 16, 16)
    same = nn.Sequential(nn.Conv3d(1, 2, 5, padding="same"), nn.MaxPool3d(2))
    assert feature_grid(same, "1", x).offset == (0.5,) * 3
    valid = nn.Sequential(nn.Conv3d(1, 2, 5, padding="valid"), nn.MaxPool3d(2))
    g = feature_grid(valid, "1", x)  # 12^3 after the convolution, its cell 0 on voxel 2
    assert g.stride == (2.0,) * 3 and g.offset == (2.5,) * 3


def test_resnet_grids_and_output_stride():
    x = torch.zeros(1, 1, 48, 48, 48)
    net = _resnet10(conv1_t_stride=2)
    assert feature_grid(net, "layer2", x).stride == (8.0,) * 3
    assert feature_grid(net, "layer2", x).offset == (0.0,) * 3
    fine = _resnet10(conv1_t_stride=2, output_stride=4)
    g = feature_grid(fine, "layer4", x)
    assert g.stride == (4.0,) * 3 and g.offset == (0.0,) * 3 and g.traced


@pytest.mark.parametrize("layer", ["layer1", "layer2"])
def test_traced_grid_matches_the_receptive_field_of_a_cell(layer):
    """The gradient of one cell's activations has the cell's receptive field as support; its centre is the grid's."""
    net = _resnet10(conv1_t_stride=2)
    x = torch.rand(1, 1, 96, 96, 96, generator=torch.Generator().manual_seed(0), requires_grad=True)
    store: dict[str, torch.Tensor] = {}
    dict(net.named_modules())[layer].register_forward_hook(lambda _m, _i, o: store.__setitem__("a", o))
    net(x)
    cell = (5, 6, 5)
    (g,) = torch.autograd.grad(store["a"][(0, slice(None), *cell)].sum(), x)
    support = torch.nonzero(g[0, 0] != 0)
    lo, hi = support.min(0).values.numpy(), support.max(0).values.numpy()
    assert (lo > 0).all() and (hi < 95).all(), "receptive field clipped: choose a smaller cell"
    grid = feature_grid(net, layer, x.detach())
    expected = np.array(grid.stride) * np.array(cell) + np.array(grid.offset)
    np.testing.assert_allclose((lo + hi) / 2, expected)


def test_untraceable_grid_falls_back_to_tiling():
    class FunctionalPool(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv3d(1, 2, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(nn.functional.avg_pool3d(x, 4))

    g = feature_grid(FunctionalPool(), "conv", torch.zeros(1, 1, 16, 16, 16))
    assert not g.traced and g.stride == (4.0,) * 3 and g.offset == (1.5,) * 3
    assert g.as_params()["alignment"].startswith("assumed")


def test_place_on_grid_puts_each_cell_on_its_centre():
    cells = np.zeros((4, 4, 4), np.float32)
    cells[1, 2, 3] = 1.0
    out = place_on_grid(cells, (16, 16, 16), (4.0, 4.0, 4.0), (0.0, 0.0, 0.0))
    assert np.unravel_index(int(out.argmax()), out.shape) == (4, 8, 12) and out[4, 8, 12] == 1.0
    assert out[6, 8, 12] == pytest.approx(0.5)  # halfway to the next cell centre
    tiled = place_on_grid(cells, (16, 16, 16), (4.0, 4.0, 4.0), (1.5, 1.5, 1.5))
    np.testing.assert_allclose(tiled, upsample_to(cells, (16, 16, 16)), atol=1e-6)


def test_gradcam_peak_lands_on_the_structure_the_cell_saw():
    """A bright voxel seen by one stride-4 cell: the map peaks on that voxel, not 1.5 voxels off."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv3d(1, 1, 3, stride=2, padding=1, bias=False),
        nn.ReLU(),
        nn.Conv3d(1, 1, 3, stride=2, padding=1, bias=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Linear(1, 2),
    )
    with torch.no_grad():
        for i in (0, 2):
            net[i].weight.zero_()
            net[i].weight[..., 1, 1, 1] = 1.0  # each cell sees the voxel at its centre
        net[6].weight.copy_(torch.tensor([[-1.0], [1.0]]))
    x = torch.zeros(1, 1, 32, 32, 32)
    x[0, 0, 8, 12, 20] = 1.0
    m = compute_saliency(net.eval(), x, "gradcam", target_class=1, layer="3")
    assert m.peak_index == (8, 12, 20)
    assert m.params["feature_grid"] == {"stride": [4.0] * 3, "offset": [0.0] * 3, "alignment": "traced"}
