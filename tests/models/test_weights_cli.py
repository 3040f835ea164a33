"""``medimg weights`` through the real command line entry point."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from medimg.cli.main import main
from medimg.errors import EXIT_INPUT_ERROR
from medimg.models.download import sha256_of
from medimg.models.networks import build_network


def _checkpoint(tmp_path):
    torch.manual_seed(5)
    net = build_network("resnet10", spatial_dims=2, in_channels=1, out_channels=2, widen_factor=0.25)
    path = tmp_path / "task.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "epoch": 3}, path)
    return net, path


def test_list_shows_presets_and_networks(capsys):
    assert main(["weights", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    presets = {p["name"]: p for p in listing["presets"]}
    assert presets["merlin-encoder"]["network"] == "merlin" and len(presets["merlin-encoder"]["sha256"]) == 64
    assert "medicalnet-resnet50" in presets and "swinunetr-ssl" in presets
    assert {"unet", "merlin", "resnet152"} <= {n["name"] for n in listing["networks"]}
    assert main(["weights", "list"]) == 0
    assert "preset:<name>" in capsys.readouterr().out
    assert main(["weights", "networks", "unet"]) == 0
    assert "num_res_units = 2" in capsys.readouterr().out


def test_inspect_convert_verify_check(tmp_path, capsys):
    net, ckpt = _checkpoint(tmp_path)
    assert main(["weights", "inspect", str(ckpt), "--keys", "2"]) == 0
    out = capsys.readouterr().out
    n = len(net.state_dict())
    assert f"tensors:    {n}" in out and "state dict under 'state_dict'" in out and "epoch" in out

    output = tmp_path / "encoder.safetensors"
    assert main(["weights", "convert", str(ckpt), str(output), "--strip-prefix", "net."]) == 0
    converted = load_file(str(output))
    assert set(converted) == set(net.state_dict())
    torch.testing.assert_close(converted["layer1.0.conv1.weight"], net.layer1[0].conv1.weight)
    digest = sha256_of(output)
    assert digest in capsys.readouterr().out

    assert main(["weights", "verify", str(output), digest]) == 0
    assert main(["weights", "verify", str(output), "f" * 64]) == EXIT_INPUT_ERROR
    assert "sha256 mismatch" in capsys.readouterr().err

    args = [
        "weights",
        "check",
        str(output),
        "--network",
        "resnet10",
        "--spatial-dims",
        "2",
        "--in-channels",
        "3",
        "--param",
        "widen_factor=0.25",
        "--adapt-in-channels",
        "--json",
    ]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["adapted"] == 1 and report["encoder_fraction"] == 1.0

    assert (
        main(
            [
                "weights",
                "check",
                str(ckpt),
                "--network",
                "resnet10",
                "--spatial-dims",
                "2",
                "--param",
                "widen_factor=0.25",
            ]
        )
        == EXIT_INPUT_ERROR
    )
    assert "strip_prefix: 'net.'" in capsys.readouterr().err
