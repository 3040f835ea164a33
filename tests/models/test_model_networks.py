"""Network factory: every registered name builds, runs, and knows its encoder and head."""

from __future__ import annotations

import pytest
import torch

from medimg.errors import ConfigError
from medimg.models.networks import (
    available_networks,
    build_network,
    encoder_prefixes,
    head_prefixes,
    is_under,
    network_info,
    network_task,
    register_network,
)
from medimg.models.registry import Registry

SMALL = {
    "unet": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1},
    "dynunet": {"kernel_size": [3, 3, 3], "strides": [1, 2, 2], "filters": [4, 8, 16]},
    "segresnet": {"init_filters": 4, "norm": ["GROUP", {"num_groups": 2}]},
    "swinunetr": {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "window_size": 4},
    "densenet121": {"init_features": 8, "growth_rate": 4, "block_config": [1, 1, 1, 1]},
}


def test_registry_refuses_to_overwrite_and_lists_names():
    reg = Registry("thing")
    reg.register("a", 1)
    with pytest.raises(ConfigError, match="already registered"):
        reg.register("a", 2)
    assert reg.get("a") == 1
    with pytest.raises(ConfigError, match="unknown thing 'b'; expected one of: a"):
        reg.get("b")
    with pytest.raises(ConfigError, match="already registered"):
        register_network("unet", task="segmentation")(lambda *a, **k: None)


def test_all_required_names_are_registered():
    names = set(available_networks())
    required = {"unet", "dynunet", "segresnet", "swinunetr", "densenet121", "merlin", "efficientnet-b0"}
    required |= {f"resnet{d}" for d in (10, 18, 34, 50, 101, 152)}
    assert required <= names
    assert set(available_networks("segmentation")) == {
        "unet",
        "dynunet",
        "segresnet",
        "swinunetr",
        "flexunet",
    }
    assert network_task("merlin") == "classification"


@pytest.mark.parametrize("name", ["unet", "dynunet", "segresnet", "swinunetr"])
def test_segmentation_networks_keep_the_grid(name):
    net = build_network(name, spatial_dims=3, in_channels=2, out_channels=3, **SMALL[name]).eval()
    with torch.no_grad():
        side = 64 if name == "swinunetr" else 32  # Swin UNETR's deepest level must exceed 1 voxel
        out = net(torch.randn(1, 2, side, side, 32))
    assert out.shape == (1, 3, side, side, 32)
    enc = encoder_prefixes(name, net)
    keys = list(net.state_dict())
    assert enc and all(any(k.startswith(p) for k in keys) for p in enc)
    n_enc = sum(is_under(k, enc) for k, _ in net.named_parameters())
    assert 0 < n_enc < len(list(net.named_parameters()))
    head = head_prefixes(name, net)
    assert head and not any(is_under(k, enc) for k in keys if is_under(k, head))


@pytest.mark.parametrize(
    "name,dims",
    [
        ("densenet121", 3),
        ("resnet10", 3),
        ("resnet18", 2),
        ("efficientnet-b0", 2),
        ("patchnet", 3),
        ("patchnet", 2),
    ],
)
def test_classification_networks_output_logits(name, dims):
    net = build_network(name, spatial_dims=dims, in_channels=1, out_channels=4, **SMALL.get(name, {})).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, *([32] * dims)))
    assert out.shape == (2, 4)
    enc, head = encoder_prefixes(name, net), head_prefixes(name, net)
    params = [k for k, _ in net.named_parameters()]
    assert all(is_under(k, enc) != is_under(k, head) for k in params)
    assert (
        sum(p.numel() for k, p in net.named_parameters() if is_under(k, head))
        == (
            net.state_dict()[[k for k in params if is_under(k, head) and k.endswith("weight")][-1]].shape[1]
            + 1
        )
        * 4
    )


def test_resnets_use_medicalnet_shortcuts():
    assert network_info("resnet18").defaults["shortcut_type"] == "A"
    assert network_info("resnet50").defaults["bias_downsample"] is False
    r50 = build_network("resnet50", in_channels=1, out_channels=2)
    assert r50.layer1[0].downsample[0].bias is None
    assert tuple(r50.conv1.weight.shape) == (64, 1, 7, 7, 7)


def test_merlin_architecture_is_an_inflated_resnet152():
    net = build_network("merlin", in_channels=3, out_channels=5)
    state = net.state_dict()
    assert tuple(state["conv1.weight"].shape) == (64, 3, 3, 7, 7)
    assert net.conv1.stride == (1, 2, 2)
    assert tuple(state["layer1.0.downsample.0.weight"].shape) == (256, 64, 1, 1, 1)
    assert "layer1.0.downsample.0.bias" not in state
    assert sum(1 for k in state if not k.startswith("fc.")) == 930  # tensors of the published encoder
    assert tuple(state["fc.weight"].shape) == (5, 2048)
    assert encoder_prefixes("merlin", net) == ["conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4."]


def test_unknown_parameter_names_network_and_allowed_ones():
    with pytest.raises(ConfigError) as err:
        build_network("unet", in_channels=1, out_channels=2, chanels=[4, 8])
    text = str(err.value)
    assert (
        "'unet'" in text
        and "'chanels'" in text
        and "did you mean 'channels'" in text
        and "num_res_units" in text
    )
    with pytest.raises(ConfigError, match="does not accept parameter 'pretrained'"):
        build_network("densenet121", in_channels=1, out_channels=2, pretrained=True)
    with pytest.raises(ConfigError, match="unknown network 'unet3d'"):
        build_network("unet3d", in_channels=1, out_channels=2)
    with pytest.raises(ConfigError, match="in_channels must be a positive integer"):
        build_network("unet", in_channels=0, out_channels=2)
    with pytest.raises(ConfigError, match="cannot be built"):
        build_network("unet", in_channels=1, out_channels=2, channels=[4, 8, 16], strides=[2])


def test_dynunet_alias_keys_are_not_counted_twice(tmp_path):
    from monai.networks import nets
    from safetensors.torch import load_file, save_file

    from medimg.models.loading import unique_state_keys

    net = build_network("dynunet", in_channels=1, out_channels=2, **SMALL["dynunet"]).eval()
    # MONAI's skip_layers re-reference the blocks: medimg's DynUNet lists each weight once
    assert unique_state_keys(net) == list(net.state_dict())
    assert not any(k.startswith("skip_layers.") for k in net.state_dict())
    # so safetensors saves it (it refuses tensors that share memory) and it loads back exactly
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    again = build_network("dynunet", in_channels=1, out_channels=2, **SMALL["dynunet"]).eval()
    again.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(again(x), net(x))
    # MONAI's own state dict (with the skip_layers aliases) loads too, and the outputs agree
    monai_net = nets.DynUNet(3, 1, 2, upsample_kernel_size=[2, 2], **SMALL["dynunet"]).eval()
    net.load_state_dict(monai_net.state_dict())
    with torch.no_grad():
        assert torch.equal(net(x), monai_net(x))


def test_resnet_output_stride_keeps_weights_and_refines_layer4():
    from monai.networks import nets

    from medimg.models.classification_nets import LocalResNet

    kw = {"widen_factor": 0.25, "conv1_t_size": 5, "conv1_t_stride": 2}
    plain = build_network("resnet10", in_channels=1, out_channels=2, **kw).eval()
    fine = build_network("resnet10", in_channels=1, out_channels=2, output_stride=4, **kw).eval()
    shapes = {k: tuple(v.shape) for k, v in plain.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in fine.state_dict().items()} == shapes  # same checkpoints load
    fine.load_state_dict(plain.state_dict())
    x = torch.randn(1, 1, 48, 48, 48, generator=torch.Generator().manual_seed(0))
    feats: dict[str, tuple[int, ...]] = {}
    fine.layer4.register_forward_hook(lambda _m, _i, o: feats.__setitem__("fine", tuple(o.shape[2:])))
    plain.layer4.register_forward_hook(lambda _m, _i, o: feats.__setitem__("plain", tuple(o.shape[2:])))
    with torch.no_grad():
        fine(x), plain(x)
    assert feats == {"fine": (12, 12, 12), "plain": (2, 2, 2)}
    # the default is MONAI's network, operation for operation
    monai_net = nets.ResNet(
        "basic",
        [1, 1, 1, 1],
        [64, 128, 256, 512],
        spatial_dims=3,
        n_input_channels=1,
        num_classes=2,
        shortcut_type="B",
        bias_downsample=False,
        **kw,
    ).eval()
    monai_net.load_state_dict(plain.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(plain(x), monai_net(x))
    assert isinstance(plain, LocalResNet) and plain.output_stride == 32
    # shortcut type A (ResNet-18/34) dilates its pooled identity too
    r18 = build_network("resnet18", in_channels=1, out_channels=2, output_stride=8).eval()
    with torch.no_grad():
        assert r18(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 2)
    with pytest.raises(ConfigError, match=r"model.params.output_stride: expected one of \[4, 8, 16, 32\]"):
        build_network("resnet10", in_channels=1, out_channels=2, output_stride=6, **kw)
