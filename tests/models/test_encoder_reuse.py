"""A segmentation encoder reused for classification, a classifier reused as a segmentation encoder."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from medimg.config.weights import PretrainedSpec, RenameRule
from medimg.models.loading import load_pretrained
from medimg.models.networks import build_network, encoder_prefixes, head_prefixes

SEGRESNET = {"init_filters": 4, "norm": ["GROUP", {"num_groups": 2}]}
SWIN = {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "window_size": 4}


def _load(name, net, spec):
    return load_pretrained(
        net, spec, encoder_prefixes=encoder_prefixes(name, net), head_prefixes=head_prefixes(name, net)
    )


def test_segresnet_encoder_becomes_a_classifier(tmp_path):
    seg = build_network("segresnet", in_channels=1, out_channels=3, **SEGRESNET)
    path = tmp_path / "seg.safetensors"
    save_file(dict(seg.state_dict()), str(path))
    cls = build_network("segresnet-classifier", in_channels=1, out_channels=2, **SEGRESNET)
    report = _load("segresnet-classifier", cls, PretrainedSpec(source=str(path), min_encoder_fraction=1.0))
    assert report.encoder_fraction == 1.0 and sorted(report.missing) == ["fc.bias", "fc.weight"]
    assert {k.split(".")[0] for k in report.unexpected} == {"up_layers", "up_samples", "conv_final"}
    torch.testing.assert_close(
        cls.down_layers[2][1].conv1.conv.weight, seg.down_layers[2][1].conv1.conv.weight
    )
    assert cls(torch.rand(2, 1, 16, 16, 16)).shape == (2, 2)


def test_swin_ssl_style_checkpoint_loads_into_swin_classifier(tmp_path):
    seg = build_network("swinunetr", in_channels=1, out_channels=2, **SWIN)
    ssl_state = {}
    for key, value in seg.state_dict().items():
        if key.startswith("swinViT."):  # the published SSL file names: module.* and mlp.fc1/fc2
            ssl_state["module." + key[len("swinViT.") :].replace(".mlp.linear", ".mlp.fc")] = value
    ssl_state["module.rotation_head.weight"] = torch.zeros(4, 8)
    path = tmp_path / "model_swinvit.pt"
    torch.save({"state_dict": ssl_state, "epoch": 100}, path)
    rename = [
        RenameRule(pattern=r"^module\.", replace="swinViT."),
        RenameRule(pattern=r"\.mlp\.fc(\d)\.", replace=r".mlp.linear\1."),
    ]
    cls = build_network("swinunetr-classifier", in_channels=1, out_channels=2, **SWIN)
    report = _load("swinunetr-classifier", cls, PretrainedSpec(source=str(path), rename=rename))
    assert report.encoder_fraction == 1.0 and report.unexpected == ["swinViT.rotation_head.weight"]
    torch.testing.assert_close(
        cls.swinViT.layers4[0].blocks[0].mlp.linear1.weight,
        seg.swinViT.layers4[0].blocks[0].mlp.linear1.weight,
    )
    seg2 = build_network("swinunetr", in_channels=1, out_channels=2, **SWIN)
    assert _load("swinunetr", seg2, PretrainedSpec(source=str(path), rename=rename)).encoder_fraction == 1.0


def test_resnet_classifier_becomes_flexunet_encoder(tmp_path):
    cls = build_network("resnet18", in_channels=1, out_channels=2)
    path = tmp_path / "cls.safetensors"
    save_file(dict(cls.state_dict()), str(path))
    seg = build_network(
        "flexunet", in_channels=1, out_channels=3, backbone="resnet18", decoder_channels=[32, 16, 8, 8, 4]
    )
    report = _load(
        "flexunet", seg, PretrainedSpec(source=str(path), add_prefix="encoder.", min_encoder_fraction=1.0)
    )
    assert report.encoder_fraction == 1.0 and sorted(report.unexpected) == [
        "encoder.fc.bias",
        "encoder.fc.weight",
    ]
    torch.testing.assert_close(seg.encoder.layer3[0].conv1.weight, cls.layer3[0].conv1.weight)
    with torch.no_grad():
        assert seg.eval()(torch.rand(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)
