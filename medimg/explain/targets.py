"""What a map explains: the scalar score of a class (classification) or of a label in a region
(segmentation), computed from the network's logits.

A method explains a :class:`Target`, read from its parameters by the task's resolver
(:data:`TARGETS`): :func:`class_target` from ``target_class``, :func:`label_target` from
``label`` and ``region``. A segmentation target's region is fixed on the unchanged input before
the method starts (by default the voxels the network predicts as ``label``), so every point of an
integration path or every noisy copy explains the same voxels.

Binary classifiers with a single output logit are supported: class 1 is the logit, class 0 its
negation, and the probability is the sigmoid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medimg.errors import ConfigError

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Probabilities ``(B, K)`` from classification logits (sigmoid for one logit, else softmax).

    Example:
        >>> class_probabilities(torch.tensor([[0.0, 0.0]])).tolist()
        [[0.5, 0.5]]
    """
    if logits.ndim != 2:
        raise ValueError(f"classification logits must be (B, K), got shape {tuple(logits.shape)}")
    if logits.shape[1] == 1:
        p1 = torch.sigmoid(logits)
        return torch.cat([1 - p1, p1], dim=1)
    return torch.softmax(logits, dim=1)


def predicted_class(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, float]:
    """``(class, probability)`` of the model's prediction for one input.

    Example:
        >>> cls, prob = predicted_class(model, x)  # doctest: +SKIP
    """
    with torch.no_grad():
        probs = class_probabilities(model(x))[0]
    k = int(torch.argmax(probs))
    return k, float(probs[k])


def class_logit_score(target_class: int) -> ScoreFn:
    """A score function: the logit of ``target_class`` for each batch item (``(B,)``).

    Example:
        >>> class_logit_score(1)(torch.tensor([[0.2, 1.5]])).tolist()
        [1.5]
    """

    def score(logits: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 2:
            raise ValueError(f"classification logits must be (B, K), got shape {tuple(logits.shape)}")
        if logits.shape[1] == 1:
            return logits[:, 0] if target_class == 1 else -logits[:, 0]
        if not 0 <= target_class < logits.shape[1]:
            raise ConfigError(f"target class {target_class} does not exist; the model has {logits.shape[1]}")
        return logits[:, target_class]

    return score


def class_probability_score(target_class: int) -> ScoreFn:
    """A score function: the probability of ``target_class`` (``(B,)``), for faithfulness curves.

    Example:
        >>> class_probability_score(0)(torch.tensor([[0.0, 0.0]])).tolist()
        [0.5]
    """

    def score(logits: torch.Tensor) -> torch.Tensor:
        return class_probabilities(logits)[:, target_class]

    return score


def region_label_score(label: int, region: np.ndarray | torch.Tensor | None) -> ScoreFn:
    """Seg-Grad-CAM target: the logits of ``label`` summed inside ``region`` (``(B,)``).

    ``region`` is a boolean ``(D, H, W)`` mask on the output grid; ``None`` means the voxels
    the model itself assigns to ``label`` (argmax), or the whole volume when it predicts none.

    Example:
        >>> s = region_label_score(1, np.ones((2, 2, 2), bool))
        >>> float(s(torch.ones(1, 2, 2, 2, 2))[0])
        8.0
    """

    def score(logits: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 5:
            raise ValueError(f"segmentation logits must be (B, K, D, H, W), got shape {tuple(logits.shape)}")
        if not 0 <= label < logits.shape[1]:
            raise ConfigError(f"label {label} does not exist; the model outputs {logits.shape[1]} channels")
        if region is None:
            mask = (logits.argmax(dim=1) == label).detach()
            if not bool(mask.any()):
                mask = torch.ones_like(mask)
        else:
            mask = torch.as_tensor(np.asarray(region), device=logits.device).bool()[None]
            if tuple(mask.shape[1:]) != tuple(logits.shape[2:]):
                raise ValueError(
                    f"region shape {tuple(mask.shape[1:])} differs from the output grid {tuple(logits.shape[2:])}"
                )
        return (logits[:, label] * mask.to(logits.dtype)).flatten(1).sum(1)

    return score


def resolve_target_class(model: torch.nn.Module, x: torch.Tensor, target_class: int | None) -> int:
    """The class to explain: ``target_class`` if given, else the predicted class."""
    return predicted_class(model, x)[0] if target_class is None else int(target_class)


def region_probability_score(label: int, region: np.ndarray | torch.Tensor | None) -> ScoreFn:
    """Mean probability of ``label`` inside ``region`` (``(B,)``), for segmentation faithfulness curves.

    ``region`` as in :func:`region_label_score` (``None``: the region predicted on each input).

    Example:
        >>> s = region_probability_score(1, np.ones((2, 2, 2), bool))
        >>> round(float(s(torch.zeros(1, 2, 2, 2, 2))[0]), 2)
        0.5
    """

    def score(logits: torch.Tensor) -> torch.Tensor:
        probs = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
        channel = 0 if logits.shape[1] == 1 else label
        if region is None:
            mask = (logits.argmax(dim=1) == label) if logits.shape[1] > 1 else (logits[:, 0] > 0)
        else:
            mask = (
                torch.as_tensor(np.asarray(region), device=logits.device)
                .bool()[None]
                .expand(len(logits), -1, -1, -1)
            )
        mask = mask.to(probs.dtype)
        return (probs[:, channel] * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp(min=1)

    return score


def fixed_region(
    model: torch.nn.Module, x: torch.Tensor, label: int, region: np.ndarray | None
) -> np.ndarray:
    """``region``, or the voxels ``model`` predicts as ``label`` for ``x`` (all voxels when none).

    Example:
        >>> fixed_region(torch.nn.Conv3d(1, 2, 1), torch.zeros(1, 1, 2, 2, 2), 1, np.ones((2, 2, 2), bool)).sum()
        np.int64(8)
    """
    if region is not None:
        return np.asarray(region, dtype=bool)
    with torch.no_grad():
        logits = model(x)
    pred = logits[0, 0] > 0 if logits.shape[1] == 1 else logits[0].argmax(dim=0) == label
    found = pred.cpu().numpy()
    return found if found.any() else np.ones_like(found)


@dataclass(frozen=True)
class Target:
    """What a map explains: a score of ``model``'s logits, resolved for the input ``x``.

    Every saliency algorithm takes one (:func:`medimg.explain.saliency.register_algorithm`), so
    it is written once for both tasks.

    Attributes:
        model: the network explained.
        x: the input explained, ``(1, C, D, H, W)``.
        task: the task whose target this is (``classification`` or ``segmentation``).
        score: the logit score gradient methods follow (``(B,)`` from the logits).
        probability: the probability perturbation methods follow (``(B,)`` from the logits).
        description: what :attr:`SaliencyMap.target` records, e.g. ``{"class": 1}`` or
            ``{"label": 2, "region": "predicted"}``.
    """

    model: torch.nn.Module
    x: torch.Tensor
    task: str
    score: ScoreFn
    probability: ScoreFn
    description: dict[str, Any]


def class_target(model: torch.nn.Module, x: torch.Tensor, target_class: int | None = None) -> Target:
    """A classifier's target: the logit of ``target_class``, or of the predicted class when ``None``.

    Args:
        model: classifier returning ``(B, K)`` logits (``K = 1``: binary, sigmoid).
        x: input ``(1, C, D, H, W)``.
        target_class: class to explain (``None``: the predicted class).

    Example:
        >>> t = class_target(torch.nn.Identity(), torch.zeros(1, 3), target_class=2)
        >>> t.description, t.score(torch.tensor([[0.0, 1.0, 4.0]])).tolist()
        ({'class': 2}, [4.0])
    """
    cls = resolve_target_class(model, x, target_class)
    scores = class_logit_score(cls), class_probability_score(cls)
    return Target(model, x, "classification", *scores, {"class": cls})


def label_target(
    model: torch.nn.Module, x: torch.Tensor, label: int = 1, region: np.ndarray | None = None
) -> Target:
    """A segmentation network's target: ``label``'s logits summed inside a region fixed on ``x``.

    Args:
        model: segmentation network returning ``(B, K, D, H, W)`` logits.
        x: input ``(1, C, D, H, W)``.
        label: output channel to explain.
        region: boolean ``(D, H, W)`` mask on the input grid; ``None``: the voxels ``model``
            predicts as ``label`` for ``x`` (:func:`fixed_region`).

    Example:
        >>> t = label_target(torch.nn.Conv3d(1, 2, 1), torch.zeros(1, 1, 2, 2, 2), 1, np.ones((2, 2, 2), bool))
        >>> t.description, float(t.score(torch.ones(1, 2, 2, 2, 2))[0])
        ({'label': 1, 'region': 'given'}, 8.0)
    """
    voxels = fixed_region(model, x, label, region)
    description = {"label": int(label), "region": "predicted" if region is None else "given"}
    scores = region_label_score(label, voxels), region_probability_score(label, voxels)
    return Target(model, x, "segmentation", *scores, description)


TargetResolver = Callable[..., Target]

#: Each task's resolver: ``resolver(model, x, **target_params) -> Target``; its keyword
#: parameters (``target_class``; ``label``, ``region``) are the target's parameters of every
#: method of that task.
TARGETS: dict[str, TargetResolver] = {"classification": class_target, "segmentation": label_target}
