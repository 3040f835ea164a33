"""The Lightning module and the training data of a detector.

Training samples are the cases on the plan grid (z-scored) with their true box corners. Each draw
flips the volume along every axis with probability 1/2 (boxes flipped with it) and, when the case
is larger than the plan's patch, crops a patch around a random lesion (or anywhere, one time in
three); boxes whose centre falls outside the crop are dropped, the others clipped to it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import Dataset

from medimg.detection.plan import DetectionPlan


class BoxDataset(Dataset):
    """Random flips and lesion-centred crops of (array, corners) training pairs."""

    def __init__(
        self, arrays: Sequence[np.ndarray], corners: Sequence[np.ndarray], plan: DetectionPlan, seed: int = 0
    ) -> None:
        self.arrays = list(arrays)
        self.corners = [np.asarray(c, np.float32).reshape(-1, 6) for c in corners]
        self.patch = np.asarray(plan.patch_size)
        # the finest pyramid level's stride: a whole-volume sample is shifted by up to this much
        self.max_shift = np.asarray(plan.conv1_stride) * 2
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.arrays)

    def _shift(self, data: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Translate by a random whole number of voxels (edges repeated), up to the finest stride."""
        shift = np.array([self.rng.integers(-m, m + 1) for m in self.max_shift])
        m = self.max_shift
        padded = np.pad(data, [(int(a), int(a)) for a in m], mode="edge")
        sl = tuple(slice(int(a - t), int(a - t + n)) for a, t, n in zip(m, shift, data.shape, strict=True))
        return self._keep_inside(padded[sl], boxes + np.concatenate([shift, shift]).astype(np.float32))

    @staticmethod
    def _keep_inside(data: np.ndarray, moved: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Drop boxes whose centre left ``data``; clip the others to it."""
        size = np.asarray(data.shape)
        centres = (moved[:, :3] + moved[:, 3:]) / 2
        inside = np.all((centres >= -0.5) & (centres <= size - 0.5), axis=1)
        moved = moved[inside]
        moved[:, :3] = np.maximum(moved[:, :3], -0.5)
        moved[:, 3:] = np.minimum(moved[:, 3:], size - 0.5)
        return data, moved

    def _crop(self, data: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shape = np.asarray(data.shape)
        if np.all(shape <= self.patch):
            return self._shift(data, boxes)
        size = np.minimum(shape, self.patch)
        if len(boxes) and self.rng.random() < 2 / 3:
            centre = (boxes[self.rng.integers(len(boxes))][:3] + boxes[self.rng.integers(len(boxes))][3:]) / 2
            start = np.round(centre - size / 2 + self.rng.uniform(-0.3, 0.3, 3) * size).astype(int)
        else:
            start = np.array([self.rng.integers(0, s - w + 1) for s, w in zip(shape, size, strict=True)])
        start = np.clip(start, 0, shape - size)
        sl = tuple(slice(int(a), int(a + w)) for a, w in zip(start, size, strict=True))
        return self._keep_inside(data[sl], boxes - np.concatenate([start, start]).astype(np.float32))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        data, boxes = self._crop(self.arrays[index], self.corners[index].copy())
        for axis in range(3):
            if self.rng.random() < 0.5:
                data = np.flip(data, axis)
                n = data.shape[axis]
                lo, hi = boxes[:, axis].copy(), boxes[:, axis + 3].copy()
                boxes[:, axis], boxes[:, axis + 3] = (n - 1) - hi, (n - 1) - lo
        return torch.from_numpy(np.ascontiguousarray(data))[None], torch.from_numpy(boxes)


def collate_boxes(
    batch: list[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Lists, not stacks: cases may differ in size and box count."""
    return [b[0] for b in batch], [b[1] for b in batch]


class DetectionTask(pl.LightningModule):
    """RetinaNet training: classification (focal) + box regression loss from the detector itself."""

    def __init__(
        self, detector: Any, lr: float = 1e-3, weight_decay: float = 1e-4, max_epochs: int = 20
    ) -> None:
        super().__init__()
        self.detector = detector
        self.lr, self.weight_decay, self.max_epochs = lr, weight_decay, max_epochs

    def training_step(
        self, batch: tuple[list[torch.Tensor], list[torch.Tensor]], batch_idx: int
    ) -> torch.Tensor:
        images, boxes = batch
        targets = [
            {"boxes": b, "labels": torch.zeros(len(b), dtype=torch.long, device=b.device)} for b in boxes
        ]
        self.detector.train()
        losses = self.detector(images, targets)
        loss = losses["classification"] + losses["box_regression"]
        n = len(images)
        self.log("train_loss", loss, on_epoch=True, on_step=False, batch_size=n)
        self.log("train_cls_loss", losses["classification"], on_epoch=True, on_step=False, batch_size=n)
        self.log("train_box_loss", losses["box_regression"], on_epoch=True, on_step=False, batch_size=n)
        return loss

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.detector.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=self.lr, total_steps=max(1, self.max_epochs), pct_start=0.15
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


class EpochCheckpoint(Callback):
    """After every epoch, Lightning's checkpoint of the fit written atomically to ``path``, with what
    Lightning does not keep: the random states the next epochs draw from (torch's, the loader's
    shuffling generator, the dataset's crops and flips), the workflow's config hash and the MLflow run.

    The file is written to a temporary name in the same folder, fsync'd, then ``os.replace``d, so a
    kill leaves the previous epoch's checkpoint whole. It holds tensors, numbers and strings only
    (read back with ``torch.load(weights_only=True)``).

    Example:
        >>> cb = EpochCheckpoint(Path("runs/det/checkpoint/last.ckpt"), "3f2a", "run1", dataset, generator)  # doctest: +SKIP
    """

    def __init__(
        self, path: Path, key: str, run_id: str, dataset: BoxDataset, generator: torch.Generator
    ) -> None:
        self.path, self.key, self.run_id = Path(path), key, run_id
        self.dataset, self.generator = dataset, generator

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        trainer.save_checkpoint(tmp, weights_only=False)  # the whole fit state, not the weights alone
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def state_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "run_id": self.run_id,
            "torch_rng": torch.get_rng_state(),
            "loader_rng": self.generator.get_state(),
            "dataset_rng": json.dumps(self.dataset.rng.bit_generator.state),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch_rng"])
        self.generator.set_state(state["loader_rng"])
        self.dataset.rng.bit_generator.state = json.loads(state["dataset_rng"])
