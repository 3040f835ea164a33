"""FinetuneScheduler on Lightning's BaseFinetuning: no added groups, exact learning rates on resume."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from _finetune_task import FinetuneTask

from medimg.config.weights import FinetuneSpec
from medimg.errors import ConfigError
from medimg.models.finetune import param_groups
from medimg.models.finetune_callback import FinetuneScheduler

SPEC = FinetuneSpec(freeze_encoder_epochs=1, backbone_lr_mult=0.1)


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


def _task() -> FinetuneTask:
    torch.manual_seed(0)
    return FinetuneTask(SPEC, steps=6)


def _fit(tmp_path, max_epochs: int, ckpt_path=None) -> tuple[FinetuneScheduler, Record, FinetuneTask]:
    data = torch.utils.data.TensorDataset(torch.randn(8, 1, 32, 32), torch.randint(0, 2, (8,)))
    task, record = _task(), Record()
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
    task = _task()
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
    task = _task()
    callback = FinetuneScheduler(FinetuneSpec(freeze_encoder_epochs=1), ["fc.weig"], network_attr="net")
    with pytest.raises(ConfigError, match=r"fc\.weig"):
        callback.freeze_before_training(task)
