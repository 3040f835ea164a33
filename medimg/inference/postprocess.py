"""Postprocessing chosen on validation, nnU-Net style: per label, keep the largest component or
remove small objects, only where it raises the mean validation Dice of that label.

Each step acts on one label's binary mask (removed voxels become background), so a label's
choice changes that label's Dice only and the labels are chosen independently. The candidates
per label are ``none``, ``remove_small`` (components smaller than half the smallest component
of that label in the training labels, in mm³) and ``keep_largest``. A step is kept only when its
mean validation Dice is strictly higher than ``none``'s; between two steps that tie, the milder
``remove_small`` wins. A case where the label is absent from both masks counts as Dice 1 (so
removing a false positive there counts as the gain it is).

The choice is a file of the model folder (``postprocessing.json``, recorded in ``model.json``
and checked at every load) and :class:`~medimg.inference.predictor.Predictor` applies it to every
mask on the source grid.

Example:
    >>> import numpy as np
    >>> pred = np.zeros((8, 8, 8), np.uint8); pred[1:4, 1:4, 1:4] = 1; pred[6, 6, 6] = 1
    >>> ref = np.zeros_like(pred); ref[1:4, 1:4, 1:4] = 1
    >>> pp = choose_postprocessing([(pred, ref, 1.0)], labels=[1], min_size_mm3={1: 0.5})
    >>> pp.steps
    {1: 'keep_largest'}
    >>> int(pp.apply(pred, 1.0).sum())
    27
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import WeightsError
from medimg.models.record import (
    POSTPROCESS_FILE as POSTPROCESS_FILE,  # the folder's file names: models.record
)

FORMAT = "medimg-postprocessing/1"
STEPS = ("none", "remove_small", "keep_largest")
SIZE_FACTOR = 0.5
"""``remove_small`` drops components below this share of the smallest training component."""


def _components(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components (26-connectivity) of ``binary`` and their voxel counts (index 0 unused)."""
    from scipy import ndimage

    lab, _ = ndimage.label(binary, structure=np.ones((3, 3, 3), bool))
    return lab, np.bincount(lab.ravel())


def keep_largest(mask: np.ndarray, label: int) -> np.ndarray:
    """A copy of ``mask`` where ``label`` keeps only its largest connected component."""
    out = np.array(mask, copy=True)
    lab, sizes = _components(mask == label)
    if len(sizes) > 2:
        sizes[0] = 0
        out[(lab != int(np.argmax(sizes))) & (lab > 0)] = 0
    return out


def remove_small(mask: np.ndarray, label: int, min_voxels: float) -> np.ndarray:
    """A copy of ``mask`` without the components of ``label`` smaller than ``min_voxels``."""
    out = np.array(mask, copy=True)
    lab, sizes = _components(mask == label)
    small = np.flatnonzero(sizes < min_voxels)
    small = small[small > 0]
    if len(small):
        out[np.isin(lab, small)] = 0
    return out


def _apply_step(mask: np.ndarray, label: int, step: str, min_voxels: float | None) -> np.ndarray:
    if step == "keep_largest":
        return keep_largest(mask, label)
    if step == "remove_small" and min_voxels is not None:
        return remove_small(mask, label, min_voxels)
    return mask


@dataclass
class Postprocessing:
    """Per-label steps chosen on validation, with the evidence (mean validation Dice per candidate).

    Attributes:
        steps: label -> ``keep_largest`` or ``remove_small`` (labels left as predicted are absent).
        min_size_mm3: label -> the ``remove_small`` threshold in mm³ (from the training labels).
        validation: label -> {candidate: mean validation Dice}, and ``n_cases``.
    """

    steps: dict[int, str] = field(default_factory=dict)
    min_size_mm3: dict[int, float] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)

    def apply(self, mask: np.ndarray, voxel_mm3: float) -> np.ndarray:
        """``mask`` (labels on a grid of ``voxel_mm3`` voxels) with every chosen step applied."""
        for label, step in sorted(self.steps.items()):
            size = self.min_size_mm3.get(label)
            mask = _apply_step(mask, label, step, None if size is None else size / voxel_mm3)
        return mask

    def to_json(self) -> str:
        doc = {
            "format": FORMAT,
            "steps": {str(k): v for k, v in sorted(self.steps.items())},
            "min_size_mm3": {str(k): v for k, v in sorted(self.min_size_mm3.items())},
            "validation": self.validation,
        }
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> Postprocessing:
        """Parse ``postprocessing.json``; refuse anything else, naming ``source`` and what was expected."""
        try:
            doc = json.loads(text)
            if doc.get("format") != FORMAT:
                raise ValueError(f"expected format {FORMAT!r}")
            steps = {int(k): str(v) for k, v in doc["steps"].items()}
            bad = {k: v for k, v in steps.items() if v not in STEPS[1:]}
            if bad:
                raise ValueError(f"steps {bad} are not one of {list(STEPS[1:])}")
            sizes = {int(k): float(v) for k, v in doc.get("min_size_mm3", {}).items()}
            return cls(steps, sizes, dict(doc.get("validation", {})))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise WeightsError(f"{source}: not a medimg postprocessing file ({exc})") from None


def voxel_volume(affine: np.ndarray) -> float:
    """mm³ of one voxel of a grid with this 4x4 affine."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])))


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two binary masks; 1.0 when both are empty."""
    total = int(pred.sum()) + int(ref.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred, ref).sum()) / total


def smallest_components_mm3(
    labels: Iterable[tuple[np.ndarray, float]], label_ids: Sequence[int]
) -> dict[int, float]:
    """label -> ``SIZE_FACTOR`` x the smallest connected component (mm³) of that label in ``labels``.

    ``labels`` yields (label volume, voxel mm³); a label that never occurs gets no threshold.
    """
    smallest: dict[int, float] = {}
    for arr, voxel_mm3 in labels:
        for k in label_ids:
            _, sizes = _components(arr == k)
            if len(sizes) > 1:
                v = float(sizes[1:][sizes[1:] > 0].min()) * voxel_mm3
                smallest[k] = min(smallest.get(k, v), v)
    return {k: SIZE_FACTOR * v for k, v in smallest.items()}


def choose_postprocessing(
    cases: Sequence[tuple[np.ndarray, np.ndarray, float]],
    labels: Sequence[int],
    min_size_mm3: dict[int, float],
) -> Postprocessing:
    """Per label, the step with the highest mean validation Dice, if it beats doing nothing.

    Args:
        cases: (predicted mask, reference mask, voxel mm³) per validation case, on one grid each.
        labels: the foreground labels to decide.
        min_size_mm3: the ``remove_small`` threshold per label (:func:`smallest_components_mm3`).
    """
    steps: dict[int, str] = {}
    evidence: dict[str, Any] = {"n_cases": len(cases)}
    for k in labels:
        scores: dict[str, float] = {}
        for step in STEPS:
            if step == "remove_small" and k not in min_size_mm3:
                continue
            dices = []
            for pred, ref, vox in cases:
                size = min_size_mm3.get(k)
                out = _apply_step(pred, k, step, None if size is None else size / vox)
                dices.append(_dice(out == k, ref == k))
            scores[step] = float(np.mean(dices)) if dices else float("nan")
        evidence[str(k)] = scores
        best = max((s for s in STEPS[1:] if s in scores), key=lambda s: (scores[s], -STEPS.index(s)))
        if scores[best] > scores["none"]:
            steps[int(k)] = best
    return Postprocessing(steps, {int(k): float(v) for k, v in min_size_mm3.items()}, evidence)


def save_postprocessing(folder: str | Path, pp: Postprocessing) -> Path:
    """Write ``postprocessing.json`` into a model folder and record its sha256 in ``model.json``."""
    from medimg.io.atomic import atomic_write_text
    from medimg.models.record import WEIGHTS_FILE, WORKFLOW_FILE, write_record

    folder = Path(folder)
    path = atomic_write_text(folder / POSTPROCESS_FILE, pp.to_json())
    write_record(folder, (WEIGHTS_FILE, WORKFLOW_FILE, POSTPROCESS_FILE))
    return path


def read_postprocessing(
    folder: Path, record: dict[str, str] | None, shown: str | None = None
) -> Postprocessing | None:
    """The folder's verified postprocessing, or ``None`` when it has none (and its record names none)."""
    from medimg.models.record import read_verified

    if not (folder / POSTPROCESS_FILE).is_file() and not (record and POSTPROCESS_FILE in record):
        return None
    content, _ = read_verified(folder, POSTPROCESS_FILE, record, shown=shown)
    label = Path(shown) if shown else folder
    return Postprocessing.from_json(content.decode("utf-8", errors="replace"), str(label / POSTPROCESS_FILE))


def common_postprocessing(members: Sequence[Postprocessing | None]) -> Postprocessing | None:
    """The steps every member chose (same step, same threshold) for an ensemble; ``None`` if none agree."""
    if not members or any(m is None for m in members):
        return None
    first = members[0]
    assert first is not None
    steps = {
        k: s
        for k, s in first.steps.items()
        if all(m is not None and m.steps.get(k) == s for m in members)
        and (
            s != "remove_small"
            or all(m is not None and m.min_size_mm3.get(k) == first.min_size_mm3.get(k) for m in members)
        )
    }
    if not steps:
        return None
    return Postprocessing(steps, {k: first.min_size_mm3[k] for k in steps if k in first.min_size_mm3},
                          {"ensemble": f"steps all {len(members)} members chose"})  # fmt: skip
