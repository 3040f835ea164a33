"""Checkpoints that survive a kill and resume bit-for-bit.

* :class:`AtomicCheckpointIO` (a Lightning ``CheckpointIO`` plugin, the public hook for how
  checkpoints are written) saves every checkpoint to a temp file in the same folder and
  ``os.replace``\\ s it, so ``last.ckpt`` is never half-written when the process is killed
  during a save.
* :class:`RngState` stores every random state the next epoch depends on (Python, NumPy,
  torch, each MONAI random transform, the sampler's generator) in the checkpoint and
  restores it on resume, so a resumed run draws the same patches and augmentations.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medimg.io.atomic import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` whose checkpoint files appear whole or not at all.

    Pass it to the trainer (``pl.Trainer(plugins=[AtomicCheckpointIO()])``); every
    ``ModelCheckpoint`` then writes through it. Lightning calls it on the global-zero rank only.

    Example:
        >>> io = AtomicCheckpointIO()
        >>> io.save_checkpoint({"step": 1}, "ckpt/last.ckpt")  # doctest: +SKIP
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to a temp file beside ``path``, fsync it, then ``os.replace`` it."""
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        with atomic_write(os.fspath(path)) as tmp:
            torch.save(checkpoint, tmp)


def _np_state(rs: np.random.RandomState) -> dict[str, torch.Tensor]:
    name, keys, pos, has_gauss, gauss = rs.get_state()
    return {
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "meta": torch.tensor([pos, has_gauss], dtype=torch.int64),
        "gauss": torch.tensor(float(gauss)),
    }


def _set_np_state(rs: np.random.RandomState, st: dict[str, torch.Tensor]) -> None:
    pos, has_gauss = (int(v) for v in st["meta"])
    rs.set_state(("MT19937", st["keys"].numpy().astype(np.uint32), pos, has_gauss, float(st["gauss"])))


def randomizables(obj: Any, _seen: set[int] | None = None, _depth: int = 0) -> Iterator[Any]:
    """Every MONAI ``Randomizable`` reachable from a transform (Compose, dict wrappers, inner transforms)."""
    from monai.transforms import Randomizable

    seen = _seen if _seen is not None else set()
    if id(obj) in seen or _depth > 6:
        return
    seen.add(id(obj))
    if isinstance(obj, Randomizable):
        yield obj
    children: list[Any] = []
    if isinstance(obj, (list, tuple)):
        children = list(obj)
    elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("monai"):
        children = [v for v in vars(obj).values() if hasattr(v, "__dict__") or isinstance(v, (list, tuple))]
    for child in children:
        if isinstance(child, (list, tuple)) or type(child).__module__.startswith("monai"):
            yield from randomizables(child, seen, _depth + 1)


class RngState(Callback):
    """Save and restore all random states with the checkpoint (see module docstring)."""

    def __init__(self, transform: Any, generator: torch.Generator | None) -> None:
        self.transform = transform
        self.generator = generator

    def state_dict(self) -> dict[str, Any]:
        py = random.getstate()
        return {
            "python": {
                "version": torch.tensor(py[0]),
                "state": torch.tensor(py[1], dtype=torch.int64),
                "gauss": torch.tensor(float("nan") if py[2] is None else py[2], dtype=torch.float64),
            },
            "numpy": _np_state(np.random.mtrand._rand),
            "torch": torch.get_rng_state(),
            "transforms": [_np_state(t.R) for t in randomizables(self.transform)],
            "sampler": self.generator.get_state() if self.generator is not None else torch.empty(0),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        gauss = float(state["python"]["gauss"])
        random.setstate(
            (
                int(state["python"]["version"]),
                tuple(int(v) for v in state["python"]["state"]),
                None if gauss != gauss else gauss,
            )
        )
        _set_np_state(np.random.mtrand._rand, state["numpy"])
        torch.set_rng_state(state["torch"])
        ts = list(randomizables(self.transform))
        if len(ts) != len(state["transforms"]):
            raise RuntimeError(
                f"checkpoint holds {len(state['transforms'])} transform random states, "
                f"the pipeline has {len(ts)}: the workflow's augmentation changed"
            )
        for t, st in zip(ts, state["transforms"], strict=True):
            _set_np_state(t.R, st)
        if self.generator is not None and len(state["sampler"]):
            self.generator.set_state(state["sampler"])
