"""Unseen positive cases of the synthetic classification study, for the pointing game.

A benchmark and test helper, not part of the library: ``bench_explain`` and the quickstart's
quality test write cases the model never trained on and check whether each map's peak falls
inside the lesion that decides the class.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medimg.explain.caseprep import PreparedCase, Preprocess, prepare_case
from medimg.explain.cases import ExplainCase


def synthetic_lesion_cases(
    folder: str | os.PathLike[str], n: int, preprocess: Preprocess, seed: int = 7, first: int = 1000
) -> list[PreparedCase]:
    """``n`` positive cases of the synthetic study with ``seed``, prepared for a model (the pointing game).

    Cases ``first .. first + n - 1`` (:func:`medimg.data.synthetic.make_case` with a lesion) are
    written to ``folder`` and prepared with ``preprocess``; each case's ``structure`` is its
    lesion mask on the model grid. The defaults are a study seed and indices no quickstart
    trains on, so a trained model has never seen them.

    Example:
        >>> cases = synthetic_lesion_cases(tmp, 10, trained.preprocess)  # doctest: +SKIP
        >>> hits = sum(bool(c.structure[compute_saliency(model, c.tensor, "smoothgrad").peak_index]) for c in cases)  # doctest: +SKIP
    """
    from medimg.data.synthetic import make_case
    from medimg.io.nifti import save_nifti

    out = Path(folder)
    cases = []
    for i in range(first, first + n):
        case = make_case(i, seed=seed, with_lesion=True)
        image, lesion = out / f"{case.case_key}.nii.gz", out / f"{case.case_key}_lesion.nii.gz"
        save_nifti(case.image, image)
        save_nifti(case.lesion, lesion, dtype=np.uint8)
        cases.append(prepare_case(ExplainCase(case.case_key, image, reference=1, mask=lesion), preprocess))
    return cases
