"""FinetuneScheduler on Lightning's BaseFinetuning: no added groups, exact learning rates on resume."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from medimg.config.weights import FinetuneSpec
from medimg.errors import ConfigError
from medimg.models.finetune import param_groups
from medimg.models.finetune_callback import FinetuneScheduler
from medimg.models.networks import build_network, encoder_prefixes
from medimg.training.optim import warmup_cosine

SPEC = FinetuneSpec(freeze_encoder_epochs=1, backbone_lr_mult=0.1)


class Task(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = build_network("resnet10", spatial_dims=2, in_channels=1, out_channels=2, widen_factor=0.25)
        self.prefixes = encoder_prefixes("resnet10", self.net)

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(param_groups(self.net, 1e-2, SPEC, self.prefixes), lr=1e-2)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(6, 2))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class Record(L.Callback):
    """Learning rates, group names and encoder trainability seen at every optimizer step."""

    def __init__(self) -> None:
        self.steps: dict[int, tuple] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        groups = trainer.optimizers[0].param_groups
        trainable = pl_module.net.layer1[0].conv1.weight.requires_grad
        self.steps[trainer.global_step] = (
            tuple(g["name"] for g in groups),
            tuple(g["lr"] for g in groups),
            trainable,
        )


def _fit(tmp_path, max_epochs: int, ckpt_path=None) -> tuple[FinetuneScheduler, Record, Task]:
    data = torch.utils.data.TensorDataset(torch.randn(8, 1, 32, 32), torch.randint(0, 2, (8,)))
    task, record = Task(), Record()
    callback = FinetuneScheduler(SPEC, task.prefixes, network_attr="net")
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = L.Trainer(max_epochs=max_epochs, logger=False, callbacks=[callback, record, checkpoint],
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(task, torch.utils.data.DataLoader(data, batch_size=4), ckpt_path=ckpt_path)
    return callback, record, task


def test_resume_after_unfreeze_keeps_groups_and_learning_rates(tmp_path) -> None:
    full_cb, full, _ = _fit(tmp_path / "full", 3)
    assert [(e["event"], e["epoch"], e["step"]) for e in full_cb.events] == [
        ("frozen", 0, 0),
        ("unfrozen", 1, 2),
    ]
    assert [full.steps[s][2] for s in range(6)] == [False, False, True, True, True, True]
    assert all(full.steps[s][0] == ("encoder", "head") for s in range(6)), "no parameter group is added"

    _fit(tmp_path / "cut", 2)
    last = tmp_path / "cut" / "ckpt" / "last.ckpt"
    state = torch.load(last, weights_only=False)["callbacks"]
    saved = next(v for k, v in state.items() if k.startswith("FinetuneScheduler"))
    assert set(saved) == {"frozen", "events"}  # no optimizer groups in the checkpoint
    resumed_cb, resumed, task = _fit(tmp_path / "cut", 3, ckpt_path=str(last))
    assert sorted(resumed.steps) == [4, 5]
    for step in (4, 5):
        names, lrs, trainable = resumed.steps[step]
        assert names == ("encoder", "head") and trainable
        assert lrs == pytest.approx(full.steps[step][1], rel=1e-12)
    assert [e["event"] for e in resumed_cb.events] == ["frozen", "unfrozen"], "events restored, not repeated"
    assert all(p.requires_grad for p in task.net.parameters())


def test_resume_inside_the_frozen_epochs_stays_frozen(tmp_path) -> None:
    spec_epochs = FinetuneSpec(freeze_encoder_epochs=2)
    task = Task()
    callback = FinetuneScheduler(spec_epochs, task.prefixes, network_attr="net")
    callback.freeze_before_training(task)
    assert (
        callback.frozen
        and not task.net.layer1[0].conv1.weight.requires_grad
        and task.net.fc.weight.requires_grad
    )
    optimizer = torch.optim.SGD(param_groups(task.net, 0.1, spec_epochs, task.prefixes), lr=0.1)
    callback.finetune_function(task, 1, optimizer)
    assert callback.frozen and not task.net.layer1[0].conv1.weight.requires_grad
    assert len(optimizer.param_groups) == 2


def test_a_prefix_that_names_no_module_is_a_config_error() -> None:
    task = Task()
    callback = FinetuneScheduler(FinetuneSpec(freeze_encoder_epochs=1), ["fc.weig"], network_attr="net")
    with pytest.raises(ConfigError, match=r"fc\.weig"):
        callback.freeze_before_training(task)
