"""``medimg pretrain``: unlabelled NIfTI in, safetensors out, tracked in MLflow, loadable as pretrained."""

from __future__ import annotations

import argparse

import numpy as np
import torch

from medimg.cli import pretrain as pretrain_cli
from medimg.config.weights import PretrainedSpec
from medimg.io.nifti import save_nifti
from medimg.models.loading import load_pretrained
from medimg.models.networks import build_network, encoder_prefixes
from medimg.models.ssl import apply_corruption, rotate, sample_corruption

PARAMS = ["--param", "channels=[4,8,16]", "--param", "strides=[2,2]", "--param", "num_res_units=0"]


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="medimg")
    pretrain_cli.register(parser.add_subparsers(dest="command"))
    return pretrain_cli.execute(parser.parse_args(argv))


def test_corruption_is_reproducible_and_rotation_is_exact():
    x = torch.rand(2, 1, 16, 16, 16)
    a = apply_corruption(x, sample_corruption(x.shape, torch.Generator().manual_seed(3)))
    b = apply_corruption(x, sample_corruption(x.shape, torch.Generator().manual_seed(3)))
    torch.testing.assert_close(a[0], b[0])
    assert not torch.equal(a[0], a[1])
    k = torch.tensor([1, 3])
    torch.testing.assert_close(rotate(rotate(x, k), 4 - k), x)


def test_pretrain_writes_loadable_weights_and_tracks_mlflow(tmp_path):
    import mlflow

    rng = np.random.default_rng(0)
    scans = tmp_path / "scans"
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    for i in range(2):
        save_nifti(
            rng.normal(-300, 200, (20, 18, 12)).astype(np.float32), scans / f"patient_{i}.nii.gz", affine
        )
    (scans / "broken.nii.gz").write_bytes(b"not a nifti")
    out = tmp_path / "ssl.safetensors"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = _run(
        [
            "pretrain",
            str(scans),
            "--out",
            str(out),
            "--patch",
            "16",
            "--steps",
            "3",
            "--batch",
            "2",
            "--window",
            "-1000",
            "1000",
            "--tracking-uri",
            uri,
            *PARAMS,
        ]
    )
    assert code == 1  # one unreadable input, recorded, the rest went on
    net = build_network(
        "unet", in_channels=1, out_channels=3, channels=[4, 8, 16], strides=[2, 2], num_res_units=0
    )
    report = load_pretrained(
        net, PretrainedSpec(source=str(out)), encoder_prefixes=encoder_prefixes("unet", net)
    )
    assert report.encoder_fraction == 1.0 and report.shape_mismatched  # only the output layer differs

    client = mlflow.MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("pretrain").experiment_id])[0]
    assert run.data.params["volumes"] == "2" and run.data.params["unreadable"] == "1"
    assert not any("patient" in v for v in run.data.params.values())
    assert len(client.get_metric_history(run.info.run_id, "ssl/loss")) == 2  # steps 0 and 2
    artifact = PretrainedSpec(source=f"runs:/{run.info.run_id}/weights")
    net2 = build_network(
        "unet", in_channels=1, out_channels=1, channels=[4, 8, 16], strides=[2, 2], num_res_units=0
    )
    assert (
        load_pretrained(net2, artifact, encoder_prefixes=encoder_prefixes("unet", net2)).encoder_fraction
        == 1.0
    )
    mlflow.set_tracking_uri("")
