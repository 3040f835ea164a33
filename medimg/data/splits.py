"""Patient-level splits: every case of a patient lands in the same split.

Seeded, and k-fold capable: the test split is fixed by ``test_fraction``; the rest of
the patients are dealt into ``folds`` folds and fold ``fold`` validates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medimg.config.schema import SplitConfig
from medimg.errors import DataError

SPLITS = ("train", "val", "test")


def assign_splits(df: pd.DataFrame, cfg: SplitConfig) -> pd.DataFrame:
    """Return a copy of ``df`` with a ``split`` column (train / val / test).

    A ``split`` column already in the manifest is kept when ``cfg.use_manifest_split``
    (it is checked: one patient, one split).

    Example:
        >>> df = pd.DataFrame({"case_key": list("abcdef"), "patient_key": list("aabcde")})
        >>> out = assign_splits(df, SplitConfig(val_fraction=0.2, test_fraction=0.2, seed=0))
        >>> int(out.groupby("patient_key")["split"].nunique().max())
        1
    """
    out = df.copy()
    if cfg.use_manifest_split and "split" in out:
        out["split"] = _clean_split_column(out)
    if cfg.use_manifest_split and "split" in out and out["split"].notna().all():
        bad = set(out["split"]) - set(SPLITS)
        if bad:
            raise DataError(f"manifest column 'split' has {sorted(bad)}; allowed values: {list(SPLITS)}")
        _check_patient_level(out)
        return out
    patients = np.array(sorted(out["patient_key"].astype(str).unique()))
    rng = np.random.default_rng(cfg.seed)
    rng.shuffle(patients)
    n = len(patients)
    n_test = int(round(cfg.test_fraction * n))
    test = set(patients[:n_test])
    rest = patients[n_test:]
    if cfg.folds:
        if len(rest) < cfg.folds:
            raise DataError(
                f"{len(rest)} patients outside the test split cannot make {cfg.folds} folds "
                "(data.split.folds)"
            )
        folds = np.array_split(rest, cfg.folds)
        val = set(folds[cfg.fold])
    else:
        n_val = max(1, int(round(cfg.val_fraction * n))) if cfg.val_fraction > 0 else 0
        val = set(rest[:n_val])
    if len(rest) - len(val) < 1:
        raise DataError(f"only {n} patients: no patient left for training (data.split)")
    keys = out["patient_key"].astype(str)
    out["split"] = np.where(keys.isin(test), "test", np.where(keys.isin(val), "val", "train"))
    return out


def _clean_split_column(df: pd.DataFrame) -> pd.Series:
    """The ``split`` column stripped of blanks; refuse it when only some rows are filled.

    A column that is filled for some cases and blank for others is a half-finished split: a
    random split drawn instead would put the held-out test cases into training. Blank
    everywhere means "no split given" (a random patient-level split is drawn).
    """
    col = df["split"].astype("string").str.strip().replace("", pd.NA)
    blank = col.isna()
    if blank.any() and not blank.all():
        rows = [int(i) + 2 for i in np.flatnonzero(blank.to_numpy())]  # +2: the CSV header is line 1
        cases = df.loc[blank, "case_key"].astype(str).tolist() if "case_key" in df else []
        raise DataError(
            f"manifest column 'split' is blank in {int(blank.sum())} of {len(col)} rows "
            f"(CSV lines {rows[:10]}, cases {cases[:10]}); fill every row with one of {list(SPLITS)}, "
            "or leave the whole column empty (or set data.split.use_manifest_split: false) for a random split"
        )
    return col.astype(object).where(~blank, None)


def _check_patient_level(df: pd.DataFrame) -> None:
    per_patient = df.groupby("patient_key")["split"].nunique()
    leaked = per_patient[per_patient > 1]
    if len(leaked):
        raise DataError(
            f"manifest column 'split': patient {leaked.index[0]!r} appears in more than one split; "
            "a patient's cases must share one split"
        )
