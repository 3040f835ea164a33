"""load_pretrained: key mapping, channel adaptation, head handling, reports, refusal of unsafe files."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from medimg.config.weights import PretrainedSpec, RenameRule
from medimg.errors import WeightsError
from medimg.models.checkpoint import read_checkpoint
from medimg.models.loading import adapt_input_channels, load_pretrained
from medimg.models.networks import build_network, encoder_prefixes, head_prefixes

SMALL = {"widen_factor": 0.25}


def _resnet(in_channels: int, out_channels: int, seed: int = 0):
    torch.manual_seed(seed)
    return build_network(
        "resnet10", spatial_dims=2, in_channels=in_channels, out_channels=out_channels, **SMALL
    )


def _load(net, spec):
    return load_pretrained(
        net,
        spec,
        encoder_prefixes=encoder_prefixes("resnet10", net),
        head_prefixes=head_prefixes("resnet10", net),
    )


@pytest.fixture
def pretrained_rgb(tmp_path):
    """A 3-channel ResNet-10 saved with a 'model.' prefix and without its head (like an SSL encoder)."""
    source = _resnet(3, 5, seed=1)
    state = {f"model.{k}": v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    path = tmp_path / "encoder.safetensors"
    save_file(state, str(path))
    return source, path


def test_wrong_prefix_missing_head_and_other_channel_count_load_with_correct_report(pretrained_rgb):
    source, path = pretrained_rgb
    target = _resnet(1, 2)
    head_before = target.fc.weight.detach().clone()
    spec = PretrainedSpec(source=str(path), strip_prefix="model.", adapt_in_channels=True)
    report = _load(target, spec)

    n_encoder = sum(1 for k in target.state_dict() if not k.startswith("fc."))
    assert report.encoder_total == n_encoder and report.encoder_loaded == n_encoder
    assert report.encoder_fraction == 1.0
    assert [a[0] for a in report.adapted] == ["conv1.weight"]
    assert report.adapted[0][1:] == ((16, 3, 7, 7), (16, 1, 7, 7))
    assert sorted(report.missing) == ["fc.bias", "fc.weight"]
    assert report.unexpected == [] and report.shape_mismatched == []
    assert len(report.matched) == n_encoder - 1
    assert report.renamed == n_encoder
    by_module = report.by_module()
    assert by_module["fc"]["missing"] == 2 and by_module["conv1"]["adapted"] == 1
    assert by_module["layer3"]["matched"] == sum(1 for k in target.state_dict() if k.startswith("layer3."))

    src = source.state_dict()
    dst = target.state_dict()
    torch.testing.assert_close(dst["layer4.0.conv2.weight"], src["layer4.0.conv2.weight"])
    torch.testing.assert_close(dst["bn1.running_var"], src["bn1.running_var"])
    torch.testing.assert_close(dst["conv1.weight"], src["conv1.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(target.fc.weight, head_before)  # head untouched

    text = report.format()
    assert "conv1.weight: [16, 3, 7, 7] -> [16, 1, 7, 7]" in text and "fc.weight" in text
    record = report.to_dict()
    assert record["counts"] == {
        "matched": n_encoder - 1,
        "adapted": 1,
        "missing": 2,
        "unexpected": 0,
        "shape_mismatched": 0,
        "skipped": 0,
    }
    assert report.mlflow_metrics()["pretrained/encoder_fraction"] == 1.0


def test_without_prefix_fix_nothing_is_loaded_and_the_error_suggests_it(pretrained_rgb):
    _, path = pretrained_rgb
    target = _resnet(3, 2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(WeightsError) as err:
        _load(target, PretrainedSpec(source=str(path)))
    message = str(err.value)
    assert "0 of" in message and "min_encoder_fraction" in message
    assert "strip_prefix: 'model.' would match" in message
    for key, value in target.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_channel_mismatch_without_adaptation_is_reported_and_hinted(pretrained_rgb):
    _, path = pretrained_rgb
    target = _resnet(2, 2)
    report = _load(target, PretrainedSpec(source=str(path), strip_prefix="model."))
    assert [m[0] for m in report.shape_mismatched] == ["conv1.weight"]
    assert report.encoder_loaded == report.encoder_total - 1
    assert "adapt_in_channels: true" in report.hint


def test_head_with_other_class_count_is_skipped_or_reinitialised(tmp_path):
    source = _resnet(1, 5, seed=3)
    path = tmp_path / "full.pt"
    torch.save(source.state_dict(), path)
    target = _resnet(1, 2)
    report = _load(target, PretrainedSpec(source=str(path)))
    assert sorted(k for k, _, _ in report.shape_mismatched) == ["fc.bias", "fc.weight"]
    assert report.encoder_fraction == 1.0

    same_classes = _resnet(1, 5)
    report = _load(same_classes, PretrainedSpec(source=str(path), reinit_head=True))
    assert sorted(k for k, _ in report.skipped) == ["fc.bias", "fc.weight"]
    assert not torch.equal(same_classes.fc.weight, source.fc.weight)
    torch.testing.assert_close(same_classes.layer1[0].conv1.weight, source.layer1[0].conv1.weight)


def test_rename_rules_and_exclude(tmp_path):
    source = _resnet(1, 2, seed=4)
    state = {k.replace("layer", "stage"): v for k, v in source.state_dict().items()}
    path = tmp_path / "renamed.pt"
    torch.save({"model": state, "epoch": 7}, path)
    target = _resnet(1, 2)
    spec = PretrainedSpec(
        source=str(path),
        rename=[RenameRule(pattern=r"^stage(\d)", replace=r"layer\1")],
        exclude=[r"^layer4\."],
    )
    report = _load(target, spec)
    assert report.file_format == "torch[model]"
    assert all(k.startswith("layer4.") for k, _ in report.skipped) and report.skipped
    torch.testing.assert_close(target.layer2[0].conv1.weight, source.layer2[0].conv1.weight)
    assert not torch.equal(target.layer4[0].conv1.weight, source.layer4[0].conv1.weight)


def test_lightning_checkpoint_loads_with_its_hyperparameters(tmp_path):
    import lightning as L

    class Task(L.LightningModule):
        def __init__(self, workflow: dict, lr: float = 0.1, out_dir=tmp_path):
            super().__init__()
            self.save_hyperparameters()
            self.net = _resnet(1, 2)

        def training_step(self, batch, _):
            return self.net(batch[0]).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(2, 1, 32, 32)), batch_size=2
    )
    trainer = L.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    task = Task({"name": "demo", "task": "classification"})  # a medimg task keeps its workflow
    trainer.fit(task, data)
    ckpt_path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(ckpt_path)

    ckpt = read_checkpoint(ckpt_path)  # PosixPath in hparams is a harmless global
    assert ckpt.container_key == "state_dict" and ckpt.format == "torch"
    target = _resnet(1, 2, seed=9)
    report = _load(target, PretrainedSpec(source=str(ckpt_path), strip_prefix="net."))
    assert report.encoder_fraction == 1.0 and not report.missing and not report.unexpected
    torch.testing.assert_close(target.fc.weight, task.net.fc.weight)
    assert report.notes == []

    auto = _resnet(1, 2, seed=10)  # a medimg task checkpoint: the 'net.' prefix is known, no setting needed
    report = _load(auto, PretrainedSpec(source=str(ckpt_path)))
    assert report.encoder_fraction == 1.0 and not report.missing and "'net.'" in report.notes[0]
    torch.testing.assert_close(auto.layer1[0].conv1.weight, task.net.layer1[0].conv1.weight)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("flavour", ["torch-zip", "raw-pickle"])
def test_pickle_with_a_payload_is_refused(tmp_path, flavour):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    state = {"conv1.weight": torch.zeros(1), "x": _Payload(marker)}
    if flavour == "torch-zip":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state, protocol=2))
    with pytest.raises(WeightsError) as err:
        read_checkpoint(path)
    assert "refused" in str(err.value) and "allow_pickle" in str(err.value) and str(path) in str(err.value)
    if flavour == "torch-zip":
        assert "system" in str(err.value)  # names what it wanted to import
    assert not marker.exists()


def test_sha256_mismatch_and_damaged_files_are_refused(tmp_path, pretrained_rgb):
    _, path = pretrained_rgb
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        _load(_resnet(3, 2), PretrainedSpec(source=str(path), sha256="0" * 64, strip_prefix="model."))
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(WeightsError, match="damaged safetensors"):
        read_checkpoint(truncated)
    html = tmp_path / "page.pt"
    html.write_text("<html>404</html>")
    with pytest.raises(WeightsError, match="not a weights file"):
        read_checkpoint(html)
    with pytest.raises(WeightsError, match="not found"):
        read_checkpoint(tmp_path / "absent.pt")


def test_adapt_input_channels_keeps_response_to_grey_images():
    weight = torch.randn(8, 3, 3, 3, 3)
    grey = torch.randn(1, 1, 6, 6, 6)
    conv = torch.nn.functional.conv3d
    expected = conv(grey.repeat(1, 3, 1, 1, 1), weight)
    torch.testing.assert_close(conv(grey, adapt_input_channels(weight, 1)), expected)
    four = adapt_input_channels(weight, 4)
    assert four.shape == (8, 4, 3, 3, 3)
    torch.testing.assert_close(four[:, 3], weight[:, 0] * 0.75)
