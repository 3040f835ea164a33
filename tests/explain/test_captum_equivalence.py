"""Integrated gradients and SmoothGrad run on captum and give the numbers medimg's own code gave.

The reference figures were computed with medimg's previous plain-torch implementation
(midpoint-rule path integral; mean absolute gradient over seeded Gaussian copies) on the
fixed network and input below, just before it was replaced by captum.
"""

from __future__ import annotations

import pytest
import torch

from medimg.explain.attribution import noisy_gradient_magnitude, path_attribution


@pytest.fixture(scope="module")
def net_and_input() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 1, 3, padding=1)
    )
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, 2, 6, 5, 4, generator=torch.Generator().manual_seed(1))
    return net, x


def _score(y: torch.Tensor) -> torch.Tensor:
    return (y.flatten(1) ** 2).sum(1)


def test_integrated_gradients_equal_the_previous_implementation(net_and_input) -> None:
    net, x = net_and_input
    ig = path_attribution(net, x, _score, 16, 0.0, 5)
    assert ig.shape == x.shape[1:]
    # previous implementation: sum 1.8848490715, |.| sum 2.8682026863, voxel (0,1,2,3) -0.0029093905
    assert float(ig.sum()) == pytest.approx(1.8848490715, rel=1e-5)
    assert float(ig.abs().sum()) == pytest.approx(2.8682026863, rel=1e-5)
    assert float(ig[0, 1, 2, 3]) == pytest.approx(-0.0029093905, rel=1e-5)
    # completeness: the attributions add up to score(x) - score(baseline), up to the midpoint rule's error
    gap = float(_score(net(x)) - _score(net(torch.zeros_like(x))))
    assert float(ig.sum()) == pytest.approx(gap, rel=0.05)


def test_smoothgrad_equals_the_previous_implementation_and_is_reproducible(net_and_input) -> None:
    net, x = net_and_input
    state = torch.get_rng_state()
    sg = noisy_gradient_magnitude(net, x, _score, 2048, 0.15, 64, 0)
    assert torch.equal(torch.get_rng_state(), state)  # the global random state is left alone
    # previous implementation: mean 0.0388985537, voxel (1,2,2,2) 0.0515197739 (same seeded noise draws)
    assert float(sg.mean()) == pytest.approx(0.0388985537, rel=1e-5)
    assert float(sg[1, 2, 2, 2]) == pytest.approx(0.0515197739, rel=1e-5)
    again = noisy_gradient_magnitude(net, x, _score, 2048, 0.15, 64, 0)
    assert torch.equal(sg, again)
    other = noisy_gradient_magnitude(net, x, _score, 64, 0.15, 64, 1)
    assert not torch.equal(noisy_gradient_magnitude(net, x, _score, 64, 0.15, 64, 0), other)
