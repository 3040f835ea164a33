"""Checkpoints written through AtomicCheckpointIO appear whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medimg.training.checkpointing import AtomicCheckpointIO


def test_checkpoint_round_trips_and_leaves_no_temp_file(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "ckpt" / "last.ckpt"
    io.save_checkpoint({"epoch": 3, "w": torch.arange(4.0)}, path)
    back = io.load_checkpoint(path)
    assert back["epoch"] == 3 and torch.equal(back["w"], torch.arange(4.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_failed_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1}, path)

    def dies_half_way(obj: object, f: object) -> None:
        Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")  # what a killed writer leaves behind
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert io.load_checkpoint(path)["epoch"] == 1  # the last good checkpoint is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temp file left


def test_lightning_trainer_saves_through_the_plugin(tmp_path: Path) -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.demos.boring_classes import BoringModel

    calls: list[str] = []

    class Recording(AtomicCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None):  # type: ignore[no-untyped-def]
            calls.append(Path(path).name)
            super().save_checkpoint(checkpoint, path, storage_options)

    trainer = pl.Trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False, enable_progress_bar=False,
        default_root_dir=tmp_path, plugins=[Recording()], enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(BoringModel())
    assert calls and all(name.endswith(".ckpt") for name in calls)
    assert all((p.suffix == ".ckpt") for p in tmp_path.rglob("*") if p.is_file())
