"""Classification metrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from medimg.errors import DataError
from medimg.evaluation.cls_metrics import (
    auprc,
    auroc,
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


def _fixed_binary() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    y = rng.integers(0, 2, 50)
    return y, np.clip(0.25 * y + rng.random(50) * 0.75, 0, 1).round(1)  # one decimal: many ties


# Numbers of the NumPy implementation medimg had before scikit-learn became the only one
# (computed from the same inputs); they agree to 1e-12, the last bits of float summation.
PREVIOUS = {"auroc": 0.7528735632183908, "auprc": 0.8048404610110599, "threshold": 0.4,
            "sensitivity": 0.8620689655172413, "specificity": 0.47619047619047616, "ece": 0.14}  # fmt: skip
PREVIOUS_SMALL = {"auroc": 0.65625, "auprc": 0.625, "threshold": 0.35}
PREVIOUS_MULTI = {"auroc_macro": 0.8251215694446007, "auprc_macro": 0.7068549395514324,
                  "auroc_0": 0.7585499316005472, "auprc_2": 0.7769233990568682, "threshold_1": 0.27}  # fmt: skip


def test_numbers_equal_the_previous_implementation_and_sklearn() -> None:
    y, prob = _fixed_binary()
    m = classification_metrics(y, prob)
    assert {k: m[k] for k in PREVIOUS} == pytest.approx(PREVIOUS, rel=1e-12, abs=1e-12)
    assert auroc(y, prob) == pytest.approx(skm.roc_auc_score(y, prob), rel=1e-12)
    assert auprc(y, prob) == pytest.approx(skm.average_precision_score(y, prob), rel=1e-12)
    # the previous AUPRC is average precision, not the trapezoidal area under the PR curve
    precision, recall, _ = skm.precision_recall_curve(y, prob)
    assert abs(skm.auc(recall, precision) - m["auprc"]) > 0.02
    y_small = np.array([0, 0, 1, 1, 0, 1, 1, 0])
    p_small = np.array([0.1, 0.4, 0.35, 0.8, 0.8, 0.5, 0.35, 0.0])
    small = classification_metrics(y_small, p_small)
    assert {k: small[k] for k in PREVIOUS_SMALL} == pytest.approx(PREVIOUS_SMALL, rel=1e-12)


def test_multiclass_numbers_equal_the_previous_implementation() -> None:
    rng = np.random.default_rng(42)
    rng.integers(0, 2, 50), rng.random(50)  # the draws of _fixed_binary come first
    y = rng.integers(0, 3, 60)
    logits = rng.normal(size=(60, 3)) + np.eye(3)[y]
    prob = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).round(2)
    prob = prob / prob.sum(1, keepdims=True)
    m = classification_metrics(y, prob)
    assert {k: m[k] for k in PREVIOUS_MULTI} == pytest.approx(PREVIOUS_MULTI, rel=1e-12)
    assert auroc(y, prob) == pytest.approx(m["auroc_macro"], rel=1e-12)
    assert auroc(y, prob) == pytest.approx(skm.roc_auc_score(y, prob, multi_class="ovr"), rel=1e-12)


def test_threshold_of_an_inverted_score_and_undefined_areas() -> None:
    inverted = classification_metrics([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9])
    assert inverted["auroc"] == 0.0 and inverted["threshold"] == 0.1  # J = 0 at the lowest score
    assert math.isnan(auroc(np.array([1, 1]), np.array([0.2, 0.3])))
    assert math.isnan(auprc(np.array([0, 0]), np.array([0.2, 0.3])))
    assert auprc(np.array([1, 1]), np.array([0.2, 0.3])) == 1.0
