"""Do the maps mean anything? Model-parameter randomisation and deletion/insertion curves.

* Randomisation test (Adebayo et al. 2018): a map that barely changes when the network's
  weights are replaced by random ones describes the image, not the model. We compare the map
  of the trained model with that of a weight-randomised deep copy (Spearman rank correlation
  and SSIM; low is good).
* Deletion / insertion (Petsiuk et al. 2018): remove (or add back) voxels in the order the
  map ranks them and follow the target score. A faithful map makes the score fall fast on
  deletion (low AUC) and rise fast on insertion (high AUC), compared with a random order.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import stats

from medimg.explain.saliency import SaliencyMap
from medimg.explain.targets import ScoreFn

#: Similarity below this (Spearman and SSIM) counts as "the map depends on the weights".
SIMILARITY_THRESHOLD = 0.5
#: A map is faithful when its deletion AUC beats the random order's, and its insertion AUC its
#: deletion AUC, by at least this much (scores are probabilities, AUCs lie in [0, 1]).
FAITHFULNESS_MARGIN = 0.05


def randomise_weights(
    model: torch.nn.Module, seed: int = 0, cascade_steps: int | None = None
) -> torch.nn.Module:
    """A deep copy of ``model`` with re-initialised weights (the original is untouched).

    Args:
        model: the trained network.
        seed: seed of the new random weights.
        cascade_steps: ``None`` randomises every layer; ``n`` randomises only the last ``n``
            parameterised layers (the cascading test of Adebayo et al., top layers first).

    Example:
        >>> rnd = randomise_weights(model, seed=1)  # doctest: +SKIP
    """
    clone = copy.deepcopy(model)
    layers = [m for m in clone.modules() if callable(getattr(m, "reset_parameters", None))]
    if cascade_steps is not None:
        layers = layers[len(layers) - cascade_steps :] if cascade_steps > 0 else []
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in layers:
            m.reset_parameters()
    return clone.eval()


def map_similarity(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """``(spearman, ssim)`` between two maps of the same shape (constant maps count as 0 correlation).

    Example:
        >>> a = np.random.default_rng(0).random((8, 8, 8))
        >>> [round(v, 3) for v in map_similarity(a, a)]
        [1.0, 1.0]
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {a.shape} vs {b.shape}")
    fa, fb = a.ravel(), b.ravel()
    if fa.size > 200_000:  # rank correlation on a fixed subsample keeps this cheap
        idx = np.random.default_rng(0).choice(fa.size, 200_000, replace=False)
        fa, fb = fa[idx], fb[idx]
    rho = 0.0 if np.ptp(fa) == 0 or np.ptp(fb) == 0 else float(stats.spearmanr(fa, fb).statistic)
    rho = 0.0 if math.isnan(rho) else rho

    def unit(v: np.ndarray) -> np.ndarray:
        rng = np.ptp(v)
        return np.zeros_like(v) if rng == 0 else (v - v.min()) / rng

    return rho, _ssim(unit(a), unit(b))


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two maps scaled to [0, 1]: MONAI's ``SSIMMetric`` with a uniform window of up
    to 7 voxels (odd, no larger than the smallest side), which gives scikit-image's
    ``structural_similarity`` figures to 1e-4."""
    import torch
    from monai.metrics.regression import SSIMMetric

    win = max(3, min(7, *(s if s % 2 else s - 1 for s in a.shape)))
    metric = SSIMMetric(spatial_dims=a.ndim, data_range=1.0, kernel_type="uniform", win_size=win)
    return float(metric(torch.from_numpy(b)[None, None], torch.from_numpy(a)[None, None]).mean())


@dataclass
class RandomisationResult:
    """Similarity between the trained model's map and the randomised model's map."""

    spearman: float
    ssim: float
    mode: str = "full"
    threshold: float = SIMILARITY_THRESHOLD

    @property
    def passed(self) -> bool:
        """True when the map depends on the learned weights (both similarities below threshold)."""
        return abs(self.spearman) < self.threshold and self.ssim < self.threshold


def randomisation_test(
    model: torch.nn.Module,
    x: torch.Tensor,
    explain: Callable[[torch.nn.Module, torch.Tensor], SaliencyMap],
    trained_map: SaliencyMap | None = None,
    randomised_model: torch.nn.Module | None = None,
    seed: int = 0,
) -> RandomisationResult:
    """Model-parameter randomisation test for one input and one method.

    Args:
        model: the trained network.
        x: input ``(1, C, D, H, W)``.
        explain: ``(model, x) -> SaliencyMap``, e.g. ``lambda m, x: compute_saliency(m, x, "gradcam", target_class=1)``;
            fix the target class so both maps explain the same thing.
        trained_map: the trained model's map if already computed.
        randomised_model: a copy from :func:`randomise_weights` (reuse it over a cohort).
        seed: seed for the randomised copy when none is given.

    Example:
        >>> r = randomisation_test(model, x, lambda m, v: compute_saliency(m, v, "gradcam", target_class=1))  # doctest: +SKIP
        >>> r.spearman < 0.5  # doctest: +SKIP
        True
    """
    trained = trained_map if trained_map is not None else explain(model, x)
    rnd = randomised_model if randomised_model is not None else randomise_weights(model, seed)
    rho, ssim = map_similarity(trained.array, explain(rnd, x).array)
    return RandomisationResult(rho, ssim)


@dataclass
class FaithfulnessResult:
    """Deletion and insertion curves (score against fraction of voxels changed) and their AUCs."""

    fractions: list[float]
    deletion: list[float]
    insertion: list[float]
    deletion_auc: float
    insertion_auc: float
    random_deletion_auc: float | None = None
    notes: list[str] = field(default_factory=list)

    margin: float = FAITHFULNESS_MARGIN

    @property
    def passed(self) -> bool:
        """True when deleting by the map's order removes the evidence clearly faster than a random order."""
        gap = self.insertion_auc - self.deletion_auc > self.margin
        if self.random_deletion_auc is None:
            return gap
        return gap and self.random_deletion_auc - self.deletion_auc > self.margin


def _curve(model, x, base, order, fractions, score_fn, insert: bool, batch_size: int) -> list[float]:
    flat_x, flat_b = x.reshape(x.shape[1], -1), base.reshape(x.shape[1], -1)
    n = flat_x.shape[1]
    order = order.to(x.device)
    scores: list[float] = []
    for start in range(0, len(fractions), batch_size):
        batch = []
        for f in fractions[start : start + batch_size]:
            chosen = order[: int(round(f * n))]
            img = (flat_b if insert else flat_x).clone()
            img[:, chosen] = (flat_x if insert else flat_b)[:, chosen]
            batch.append(img.reshape(x.shape[1:]))
        with torch.no_grad():
            scores.extend(float(s) for s in score_fn(model(torch.stack(batch))))
    return scores


def deletion_insertion(
    model: torch.nn.Module,
    x: torch.Tensor,
    saliency: SaliencyMap | np.ndarray,
    score_fn: ScoreFn,
    steps: int = 16,
    baseline: float = 0.0,
    batch_size: int = 4,
    with_random: bool = True,
    seed: int = 0,
) -> FaithfulnessResult:
    """Deletion and insertion curves for a map, with their areas under the curve.

    Args:
        model: the network.
        x: input ``(1, C, D, H, W)``.
        saliency: the map (on ``x``'s grid).
        score_fn: ``logits -> (B,)`` score to follow, e.g. :func:`class_probability_score`.
        steps: number of fractions after 0 (``0, 1/steps, ..., 1``).
        baseline: intensity that replaces deleted voxels (and fills the insertion start image).
        batch_size: images per forward pass.
        with_random: also compute the deletion AUC of a random voxel order, as a reference.
        seed: seed of the random order.

    Example:
        >>> r = deletion_insertion(model, x, m, class_probability_score(1))  # doctest: +SKIP
        >>> r.deletion_auc < r.insertion_auc  # doctest: +SKIP
        True
    """
    arr = saliency.array if isinstance(saliency, SaliencyMap) else np.asarray(saliency)
    x = x.detach().float()
    base = torch.full_like(x[0], float(baseline))
    order = torch.as_tensor(np.argsort(-arr.ravel(), kind="stable").copy())
    fractions = [i / steps for i in range(steps + 1)]
    deletion = _curve(model, x, base, order, fractions, score_fn, False, batch_size)
    insertion = _curve(model, x, base, order, fractions, score_fn, True, batch_size)
    result = FaithfulnessResult(
        fractions,
        deletion,
        insertion,
        float(np.trapezoid(deletion, fractions)),
        float(np.trapezoid(insertion, fractions)),
    )
    if with_random:
        rnd = torch.as_tensor(np.random.default_rng(seed).permutation(arr.size))
        random_curve = _curve(model, x, base, rnd, fractions, score_fn, False, batch_size)
        result.random_deletion_auc = float(np.trapezoid(random_curve, fractions))
    return result


def sanity_verdict(randomisation: RandomisationResult | None, faithfulness: FaithfulnessResult | None) -> str:
    """A plain-language summary of the sanity checks for a report.

    Example:
        >>> sanity_verdict(RandomisationResult(0.1, 0.05), None)[:28]
        'Passes the randomisation tes'
    """
    parts = []
    if randomisation is not None:
        r = randomisation
        nums = f"Spearman {r.spearman:.2f}, SSIM {r.ssim:.2f}"
        if r.passed:
            parts.append(
                f"Passes the randomisation test: the map changes when the model's weights are randomised "
                f"({nums}), so it reflects what the model learned."
            )
        else:
            parts.append(
                f"Fails the randomisation test: the map stays similar when the model's weights are "
                f"randomised ({nums}); it may show image structure rather than the model's reasoning. "
                f"Do not rely on it."
            )
    if faithfulness is not None:
        f = faithfulness
        ref = "" if f.random_deletion_auc is None else f" (random order: {f.random_deletion_auc:.2f})"
        if f.passed:
            parts.append(
                f"Faithful: removing the highlighted voxels first lowers the score quickly "
                f"(deletion AUC {f.deletion_auc:.2f}{ref}; insertion AUC {f.insertion_auc:.2f})."
            )
        else:
            parts.append(
                f"Not faithful: removing the highlighted voxels first does not lower the score clearly faster "
                f"than chance (deletion AUC {f.deletion_auc:.2f}{ref}; insertion AUC {f.insertion_auc:.2f})."
            )
    return " ".join(parts) if parts else "No sanity check was run."
