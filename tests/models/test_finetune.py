"""Fine-tuning: parameter groups, freezing, schedules, and their trace in MLflow."""

from __future__ import annotations

import math

import pytest
import torch
from _finetune_task import FinetuneTask
from torch import nn

from medimg.config.weights import FinetuneSpec
from medimg.models.finetune import param_groups, set_encoder_frozen, set_norm_frozen
from medimg.models.networks import build_network, encoder_prefixes
from medimg.training.optim import warmup_cosine


def _net():
    return build_network("resnet10", spatial_dims=2, in_channels=1, out_channels=2, widen_factor=0.25)


def test_param_groups_cover_every_parameter_once_with_backbone_multiplier():
    net = _net()
    prefixes = encoder_prefixes("resnet10", net)
    groups = param_groups(net, 1e-3, FinetuneSpec(backbone_lr_mult=0.1), prefixes)
    assert [g["name"] for g in groups] == ["encoder", "head"]
    assert groups[0]["lr"] == pytest.approx(1e-4) and groups[1]["lr"] == pytest.approx(1e-3)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))
    assert {id(p) for p in groups[1]["params"]} == {id(net.fc.weight), id(net.fc.bias)}


def test_freeze_unfreeze_and_frozen_norm_layers():
    net = _net()
    prefixes = encoder_prefixes("resnet10", net)
    n_encoder = sum(1 for n, _ in net.named_parameters() if not n.startswith("fc."))
    assert set_encoder_frozen(net, prefixes, True) == n_encoder
    assert not net.layer1[0].conv1.weight.requires_grad and net.fc.weight.requires_grad
    x = torch.randn(2, 1, 32, 32)
    net(x).sum().backward()
    assert net.layer1[0].conv1.weight.grad is None and net.fc.weight.grad is not None

    n_norm = set_norm_frozen(net, prefixes)
    assert n_norm == sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    set_encoder_frozen(net, prefixes, False, keep_norm_frozen=True)
    assert net.layer1[0].conv1.weight.requires_grad and not net.layer1[0].bn1.weight.requires_grad
    running = net.bn1.running_mean.clone()
    net(x)  # bn in eval mode: running statistics unchanged
    torch.testing.assert_close(net.bn1.running_mean, running)


def test_warmup_then_cosine_per_group():
    net = _net()
    groups = param_groups(net, 0.1, FinetuneSpec(backbone_lr_mult=0.5), encoder_prefixes("resnet10", net))
    optimizer = torch.optim.SGD(groups, lr=0.1)
    factor = warmup_cosine(12, 4, "cosine", min_lr_ratio=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    seen = []
    for _ in range(12):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx([0.05 * 0.25, 0.1 * 0.25])
    assert seen[3] == pytest.approx([0.05, 0.1])
    mid = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 8))
    assert seen[8] == pytest.approx([0.05 * mid, 0.1 * mid])
    assert all(a[0] / a[1] == pytest.approx(0.5) for a in seen)
    assert factor(12) == pytest.approx(0.1)
    assert warmup_cosine(12, 0, "constant")(100) == 1.0


def test_schedule_and_freeze_events_are_visible_in_mlflow(tmp_path):
    import lightning as L
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow.tracking import MlflowClient

    from medimg.models.finetune_callback import FinetuneScheduler

    spec = FinetuneSpec(freeze_encoder_epochs=1, backbone_lr_mult=0.1)

    data = torch.utils.data.TensorDataset(torch.randn(8, 1, 32, 32), torch.randint(0, 2, (8,)))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLFlowLogger(
        experiment_name="finetune", tracking_uri=uri, artifact_location=(tmp_path / "a").as_uri()
    )
    task = FinetuneTask(spec)
    frozen_weight = task.net.layer1[0].conv1.weight.detach().clone()
    callback = FinetuneScheduler(spec, task.prefixes, network_attr="net")

    class Probe(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 0:  # encoder frozen during epoch 0: unchanged
                torch.testing.assert_close(pl_module.net.layer1[0].conv1.weight, frozen_weight)

    trainer = L.Trainer(
        max_epochs=3,
        logger=logger,
        callbacks=[callback, Probe()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, loader)
    assert not torch.equal(task.net.layer1[0].conv1.weight, frozen_weight)  # trained after unfreezing
    assert [e["event"] for e in callback.events] == ["frozen", "unfrozen"]
    assert callback.events[1]["epoch"] == 1

    client = MlflowClient(uri)
    run = client.get_run(logger.run_id)
    assert (
        run.data.tags["finetune.frozen_at_epoch"] == "0"
        and run.data.tags["finetune.unfrozen_at_epoch"] == "1"
    )
    encoder_lr = client.get_metric_history(logger.run_id, "lr/encoder")
    head_lr = client.get_metric_history(logger.run_id, "lr/head")
    assert [m.step for m in head_lr] == list(range(6))
    head = [m.value for m in sorted(head_lr, key=lambda m: m.step)]
    enc = [m.value for m in sorted(encoder_lr, key=lambda m: m.step)]
    assert head[0] == pytest.approx(5e-3) and head[1] == pytest.approx(1e-2)  # warm-up
    assert head[-1] < head[2]  # cosine decay
    assert all(e == pytest.approx(h * 0.1) for e, h in zip(enc, head, strict=True))
    frozen = sorted(client.get_metric_history(logger.run_id, "finetune/encoder_frozen"), key=lambda m: m.step)
    assert frozen[0].value == 1.0 and frozen[-1].value == 0.0


def test_schedule_keys_of_older_workflows_load_at_defaults_and_refuse_otherwise():
    """Models saved before the schedule moved to ``optim`` carry the old keys at their defaults."""
    from pydantic import ValidationError

    old = {"freeze_encoder_epochs": 1, "warmup_epochs": 0, "schedule": "constant", "min_lr_ratio": 0.0}
    assert FinetuneSpec.model_validate(old).freeze_encoder_epochs == 1
    with pytest.raises(ValidationError, match="optim.warmup_epochs"):
        FinetuneSpec.model_validate({"schedule": "cosine"})
