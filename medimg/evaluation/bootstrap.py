"""Patient-level bootstrap confidence intervals and paired comparisons of two runs.

Cases of one patient are not independent, so every resample draws *patients* with
replacement and keeps all of each drawn patient's cases (a cluster bootstrap). The
interval is the percentile interval of the replicates; replicates where a statistic is
undefined (NaN, e.g. AUROC of a resample with one class) are left out and counted in
``n_valid``. Everything is seeded: the same inputs and seed give the same intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from medimg.errors import DataError

Statistic = Callable[[pd.DataFrame], Mapping[str, float]]


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile interval.

    Attributes:
        estimate: Statistic on the full data.
        low: Lower bound (``(1 - level) / 2`` percentile of the replicates).
        high: Upper bound.
        n_valid: Number of replicates where the statistic was defined.

    Example:
        >>> Interval(0.8, 0.75, 0.85, 1000).excludes(0.0)
        True
    """

    estimate: float
    low: float
    high: float
    n_valid: int

    def excludes(self, value: float = 0.0) -> bool:
        """True when ``value`` lies outside ``[low, high]`` (a finite interval only)."""
        return bool(
            np.isfinite(self.low) and np.isfinite(self.high) and (value < self.low or value > self.high)
        )

    def to_dict(self) -> dict[str, float | int]:
        """Plain dict for JSON."""
        return asdict(self)


@dataclass(frozen=True)
class Resampling:
    """How a bootstrap resamples: the unit, the number of replicates, the seed and the coverage.

    Attributes:
        patient_key: Column naming the patient of each case, the unit drawn with replacement;
            ``None`` treats every case as its own patient.
        n_boot: Number of bootstrap replicates.
        seed: Seed of the resampling (the same seed gives the same intervals).
        level: Coverage of the intervals.

    Example:
        >>> Resampling(n_boot=200).by("__patient")
        Resampling(patient_key='__patient', n_boot=200, seed=0, level=0.95)
    """

    patient_key: str | None = "patient_key"
    n_boot: int = 1000
    seed: int = 0
    level: float = 0.95

    def by(self, patient_key: str | None) -> Resampling:
        """The same resampling with another patient column."""
        return replace(self, patient_key=patient_key)

    def reseeded(self, offset: int) -> Resampling:
        """The same resampling from ``seed + offset`` (independent draws for another group)."""
        return replace(self, seed=self.seed + offset)


def percentile_interval(estimate: float, replicates: np.ndarray, level: float = 0.95) -> Interval:
    """Percentile interval of ``replicates`` (NaNs dropped) around ``estimate``.

    Example:
        >>> percentile_interval(0.5, np.linspace(0, 1, 101), 0.9)
        Interval(estimate=0.5, low=0.05, high=0.95, n_valid=101)
    """
    reps = np.asarray(replicates, float)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return Interval(float(estimate), float("nan"), float("nan"), 0)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(reps, [alpha, 1.0 - alpha])
    return Interval(float(estimate), round(float(low), 12), round(float(high), 12), int(reps.size))


def _patient_codes(frame: pd.DataFrame, patient_key: str | None) -> np.ndarray:
    if patient_key is None:
        return np.arange(len(frame))
    if patient_key not in frame.columns:
        raise DataError(
            f"per-case table has no '{patient_key}' column; the bootstrap resamples patients "
            "(Resampling(patient_key=None) only when every case is a different patient)"
        )
    if frame[patient_key].isna().any():
        raise DataError(f"column '{patient_key}' has empty values; every case needs its patient key")
    return pd.factorize(frame[patient_key])[0]


def resample_weights(codes: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """``n_boot x n_patients`` matrix: how often each patient is drawn in each replicate.

    Example:
        >>> w = resample_weights(np.array([0, 0, 1, 2]), n_boot=4, seed=0)
        >>> w.shape, w.sum(axis=1).tolist()
        ((4, 3), [3, 3, 3, 3])
    """
    n_patients = int(codes.max()) + 1 if codes.size else 0
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_patients, np.full(n_patients, 1.0 / n_patients), size=n_boot)


def bootstrap_mean_replicates(
    frame: pd.DataFrame, columns: Sequence[str], resampling: Resampling | None = None
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Means of ``columns`` (NaNs skipped) and their patient-bootstrap replicates, vectorised.

    Returns:
        ``(estimates, replicates)``; each replicate array has ``n_boot`` entries.

    Example:
        >>> df = pd.DataFrame({"patient_key": [1, 1, 2], "dice_1": [0.8, np.nan, 0.6]})
        >>> est, reps = bootstrap_mean_replicates(df, ["dice_1"], Resampling(n_boot=50))
        >>> round(est["dice_1"], 2), reps["dice_1"].shape
        (0.7, (50,))
    """
    r = resampling or Resampling()
    codes = _patient_codes(frame, r.patient_key)
    values = frame[list(columns)].to_numpy(float)
    finite = np.isfinite(values)
    n_patients = int(codes.max()) + 1
    sums = np.zeros((n_patients, values.shape[1]))
    counts = np.zeros((n_patients, values.shape[1]))
    np.add.at(sums, codes, np.where(finite, values, 0.0))
    np.add.at(counts, codes, finite.astype(float))
    weights = resample_weights(codes, r.n_boot, r.seed).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = (weights @ sums) / (weights @ counts)
        point = sums.sum(axis=0) / counts.sum(axis=0)
    estimates = {c: float(point[i]) for i, c in enumerate(columns)}
    return estimates, {c: reps[:, i] for i, c in enumerate(columns)}


def bootstrap_replicates(
    frame: pd.DataFrame, statistic: Statistic, resampling: Resampling | None = None
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Any statistic (frame -> dict of floats) on the data and on ``n_boot`` patient resamples.

    Example:
        >>> df = pd.DataFrame({"patient_key": [1, 2, 3], "x": [1.0, 2.0, 3.0]})
        >>> est, reps = bootstrap_replicates(df, lambda f: {"max": f["x"].max()}, Resampling(n_boot=20))
        >>> est, set(reps["max"]) <= {1.0, 2.0, 3.0}
        ({'max': 3.0}, True)
    """
    r = resampling or Resampling()
    codes = _patient_codes(frame, r.patient_key)
    estimates = {k: float(v) for k, v in statistic(frame).items()}
    all_rows = np.arange(len(frame))
    weights = resample_weights(codes, r.n_boot, r.seed)
    reps = {k: np.full(r.n_boot, np.nan) for k in estimates}
    for b in range(r.n_boot):
        rows = np.repeat(all_rows, weights[b][codes])  # every case of a patient drawn k times, k times
        for k, v in statistic(frame.iloc[rows]).items():
            if k in reps:
                reps[k][b] = v
    return estimates, reps


def bootstrap_ci(
    frame: pd.DataFrame, statistic: Statistic | Sequence[str], resampling: Resampling | None = None
) -> dict[str, Interval]:
    """Patient-level bootstrap CI of a statistic, or of the means of some columns.

    Args:
        frame: Per-case table, one row per case.
        statistic: Column names (their NaN-skipping means are bootstrapped, fast path) or a
            function ``frame -> {name: value}`` evaluated on every resample.
        resampling: The unit (patients by default), replicates, seed and coverage
            (:class:`Resampling`'s defaults when ``None``).

    Returns:
        ``{name: Interval}``.

    Example:
        >>> df = pd.DataFrame({"patient_key": list("aabbcc"), "dice_1": [.9, .8, .7, .9, .6, .8]})
        >>> ci = bootstrap_ci(df, ["dice_1"], Resampling(n_boot=200))["dice_1"]
        >>> round(ci.estimate, 3), ci.low <= ci.estimate <= ci.high
        (0.783, True)
    """
    if isinstance(statistic, str):
        statistic = [statistic]
    r = resampling or Resampling()
    if callable(statistic):
        point, reps = bootstrap_replicates(frame, statistic, r)
    else:
        point, reps = bootstrap_mean_replicates(frame, list(statistic), r)
    return {k: percentile_interval(point[k], reps[k], r.level) for k in point}
