"""Classification metrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from medimg.errors import DataError
from medimg.evaluation.cls_metrics import (
    calibration_bins,
    classification_metrics,
    expected_calibration_error,
    probabilities_from_frame,
)


def _binary_data(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    prob = np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1).round(2)  # rounding creates ties
    return y, prob


@pytest.mark.parametrize("seed", [0, 1])
def test_binary_agrees_with_sklearn(seed: int) -> None:
    y, prob = _binary_data(seed)
    m = classification_metrics(y, prob, threshold=0.5)
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, prob))
    assert m["auprc"] == pytest.approx(skm.average_precision_score(y, prob))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, prob))
    called = (prob >= 0.5).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, called).ravel()
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (tn, fp, fn, tp)
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, called))
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, called))
    assert m["f1"] == pytest.approx(skm.f1_score(y, called))
    assert m["ppv"] == pytest.approx(skm.precision_score(y, called))


def test_youden_threshold_maximises_j() -> None:
    y, prob = _binary_data(3)
    m = classification_metrics(y, prob)
    fpr, tpr, thresholds = skm.roc_curve(y, prob)
    best = np.max(tpr - fpr)
    assert m["sensitivity"] + m["specificity"] - 1 == pytest.approx(best)
    assert m["threshold"] in set(thresholds.tolist())


def test_ece_hand_computed() -> None:
    y = np.array([0, 0, 1, 1, 1, 0])
    prob = np.array([0.05, 0.15, 0.15, 0.85, 0.95, 0.95])
    # bins: [0,0.1]: p=.05 y=0 -> 0.05 ; (0.1,0.2]: mean p .15, rate .5 -> .35 ; (0.8,0.9]: .85 vs 1 -> .15 ;
    # (0.9,1]: .95 vs .5 -> .45 ; weights 1/6, 2/6, 1/6, 2/6
    expected = (0.05 + 2 * 0.35 + 0.15 + 2 * 0.45) / 6
    assert expected_calibration_error(y, prob) == pytest.approx(expected)
    bins = calibration_bins(y, prob)
    assert bins["n"].tolist() == [1, 2, 1, 2]


def test_perfect_and_single_class() -> None:
    m = classification_metrics([0, 0, 1, 1], [0.0, 0.1, 0.9, 1.0])
    assert m["auroc"] == 1.0 and m["auprc"] == 1.0 and m["balanced_accuracy"] == 1.0
    single = classification_metrics([1, 1, 1], [0.2, 0.7, 0.9], threshold=0.5)
    assert math.isnan(single["auroc"]) and math.isnan(single["specificity"])
    assert single["sensitivity"] == pytest.approx(2 / 3)


def test_multiclass_one_vs_rest_agrees_with_sklearn() -> None:
    rng = np.random.default_rng(5)
    n, k = 240, 3
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    m = classification_metrics(y, prob)
    for c in range(k):
        assert m[f"auroc_{c}"] == pytest.approx(skm.roc_auc_score(y == c, prob[:, c]))
        assert m[f"auprc_{c}"] == pytest.approx(skm.average_precision_score(y == c, prob[:, c]))
    assert m["auroc_macro"] == pytest.approx(skm.roc_auc_score(y, prob, multi_class="ovr", average="macro"))
    pred = prob.argmax(1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    cm = skm.confusion_matrix(y, pred)
    assert all(m[f"cm_{i}_{j}"] == cm[i, j] for i in range(k) for j in range(k))
    assert m["brier"] == pytest.approx(np.mean(np.sum((prob - np.eye(k)[y]) ** 2, axis=1)))


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(DataError, match="same cases"):
        classification_metrics([0, 1], [0.5])
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        classification_metrics([0, 1], [0.5, 1.5])
    with pytest.raises(DataError, match="0 or 1"):
        classification_metrics([0, 2], [0.5, 0.4])
    with pytest.raises(DataError, match="prob"):
        probabilities_from_frame(pd.DataFrame({"label": [0, 1], "score": [0.1, 0.2]}))
    three = pd.DataFrame(
        {
            "label": [0, 2],
            "prob_1": [0.7, 0.1],
            "prob_0": [0.2, 0.1],
            "prob_2": [0.1, 0.8],
            "prob": [0.7, 0.8],
        }
    )
    assert probabilities_from_frame(three)[1].tolist() == [[0.2, 0.7, 0.1], [0.1, 0.1, 0.8]]
    two = pd.DataFrame({"label": [0.0, 1.0], "prob_0": [0.9, 0.3], "prob_1": [0.1, 0.7]})
    y, p = probabilities_from_frame(two)
    assert p.tolist() == [0.1, 0.7] and y.dtype.kind == "i"
    with pytest.raises(DataError, match="exactly"):
        probabilities_from_frame(pd.DataFrame({"label": [0], "prob_0": [0.5], "prob_2": [0.5]}))
