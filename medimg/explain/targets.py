"""What a map explains: the scalar score of a class (classification) or of a label in a region
(segmentation), computed from the network's logits.

Binary classifiers with a single output logit are supported: class 1 is the logit, class 0 its
negation, and the probability is the sigmoid.
"""

from __future__ import annotations

from collections.abc import Callable

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
