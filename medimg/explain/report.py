"""Self-contained HTML report for one explained case.

Everything is inline: images are base64 PNGs, styles are in the page, there are no scripts,
fonts or links to other hosts, so the file opens offline and can be archived as is. The page
names the case only by its pseudonymous key (no patient data). The markup is the Jinja2
template ``templates/case_report.html``, rendered with autoescape on.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medimg.explain.figures import curve_png, triplanar_png
from medimg.explain.saliency import SaliencyMap
from medimg.explain.sanity import FaithfulnessResult, RandomisationResult, sanity_verdict
from medimg.io.atomic import atomic_write_text
from medimg.templating import package_environment


@dataclass
class MethodResult:
    """One map of a case with its sanity checks and where its NIfTI was written."""

    saliency: SaliencyMap
    nifti: str | None = None
    randomisation: RandomisationResult | None = None
    faithfulness: FaithfulnessResult | None = None
    peak_in_structure: bool | None = None

    @property
    def verdict(self) -> str:
        return sanity_verdict(self.randomisation, self.faithfulness)

    @property
    def passed(self) -> bool | None:
        checks = [c.passed for c in (self.randomisation, self.faithfulness) if c is not None]
        return all(checks) if checks else None


@dataclass
class CaseExplanation:
    """Everything a case report shows.

    Attributes:
        case_key: pseudonymous key of the case (never a patient name or ID).
        task: ``"classification"`` or ``"segmentation"``.
        image: ``(D, H, W)`` image on the grid the maps were computed on.
        affine: RAS affine of that grid.
        results: one :class:`MethodResult` per method.
        prediction: e.g. ``{"class": 1, "probability": 0.97}`` or ``{"volumes_ml": {"1": 12.5}}``.
        truth: reference class if known.
        structure: optional boolean lesion/organ mask on the grid (centre for the second overlay).
        model: model description: ``model_id``, ``run_id``, ``weights_sha256``...
        created: UTC time stamp (ISO 8601).
    """

    case_key: str
    task: str
    image: np.ndarray
    affine: np.ndarray
    results: list[MethodResult]
    prediction: dict[str, Any] = field(default_factory=dict)
    truth: int | None = None
    structure: np.ndarray | None = None
    model: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


def _base64(png: bytes) -> str:
    """A PNG as the base64 text of a ``data:`` URI (the page needs no file beside it)."""
    return base64.b64encode(png).decode("ascii")


def _fmt(value: Any) -> str:
    """A parameter value as the report shows it.

    Example:
        >>> _fmt({"stride": [4.0, 4.0, 4.0], "alignment": "traced"})
        'stride 4, 4, 4; alignment traced'
    """
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "; ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def structure_centre(mask: np.ndarray | None) -> tuple[int, int, int] | None:
    """Voxel nearest to the centre of mass of a mask (``None`` for an empty or missing mask).

    Example:
        >>> m = np.zeros((5, 5, 5), bool); m[1:4, 2, 2] = True
        >>> structure_centre(m)
        (2, 2, 2)
    """
    if mask is None or not np.any(mask):
        return None
    c = ndimage.center_of_mass(np.asarray(mask, dtype=np.float32))
    return tuple(int(round(v)) for v in c)  # type: ignore[return-value]


def _method_view(case: CaseExplanation, res: MethodResult) -> dict[str, Any]:
    """What the template shows of one method: tables as (name, value) rows, figures as base64 PNGs."""
    m = res.saliency
    rows: list[tuple[str, Any]] = [("target", ", ".join(f"{k} = {v}" for k, v in m.target.items()) or "-")]
    rows += [(k, _fmt(v)) for k, v in m.params.items()]
    rows.append(("map file", res.nifti or "not written"))
    peak, centre, outline = m.peak_index, structure_centre(case.structure), case.structure
    view: dict[str, Any] = {
        "method": m.method,
        "rows": rows,
        "grid_note": m.grid_note,
        "peak": peak,
        "peak_png": _base64(
            triplanar_png(case.image, m.array, case.affine, peak, overlay_label=m.method, outline=outline)
        ),
        "centre": centre,
        "status": {True: "pass", False: "fail", None: "note"}[res.passed],
        "verdict": res.verdict,
    }
    if centre is not None:
        view["where"] = {True: "inside", False: "outside", None: "not checked against"}[res.peak_in_structure]
        png = triplanar_png(case.image, m.array, case.affine, centre, overlay_label=m.method, outline=outline)
        view["centre_png"] = _base64(png)
    checks: list[tuple[str, str]] = []
    if res.randomisation is not None:
        r = res.randomisation
        checks += [
            ("randomisation: Spearman (trained vs random weights)", f"{r.spearman:.3f}"),
            ("randomisation: SSIM (trained vs random weights)", f"{r.ssim:.3f}"),
            ("randomisation: threshold (both below = pass)", f"{r.threshold:.2f}"),
        ]
    f = res.faithfulness
    if f is not None:
        checks += [("deletion AUC (lower is better)", f"{f.deletion_auc:.3f}")]
        if f.random_deletion_auc is not None:
            checks += [("deletion AUC, random voxel order", f"{f.random_deletion_auc:.3f}")]
        checks += [("insertion AUC (higher is better)", f"{f.insertion_auc:.3f}")]
        png = curve_png(f.fractions, {"deletion": f.deletion, "insertion": f.insertion}, m.method)
        view["curves_png"] = _base64(png)
    view["checks"] = checks
    return view


def render_case_report(case: CaseExplanation) -> str:
    """The HTML text of a case report, from the template ``templates/case_report.html``.

    Autoescape is on: the case key, method names, parameters and notes are HTML-escaped.

    Example:
        >>> html_text = render_case_report(case)  # doctest: +SKIP
    """
    pred_rows: list[tuple[str, Any]] = [("task", case.task)]
    for k, v in case.prediction.items():
        if isinstance(v, dict):
            pred_rows += [(f"{k} [{kk}]", _fmt(vv)) for kk, vv in v.items()]
        else:
            pred_rows.append((k, _fmt(v)))
    if case.truth is not None:
        pred_rows.append(("reference", case.truth))
    model_rows = [(k, v) for k, v in case.model.items() if v not in (None, "")]
    model_rows.append(("report created (UTC)", case.created))
    page = (
        package_environment("medimg.explain")
        .get_template("case_report.html")
        .render(
            key=case.case_key,
            prediction=pred_rows,
            model=model_rows,
            methods=[_method_view(case, r) for r in case.results],
        )
    )
    return page.rstrip("\n") + "\n"


def write_case_report(case: CaseExplanation, path: str | os.PathLike[str]) -> Path:
    """Write the case report atomically and return its path.

    Example:
        >>> write_case_report(case, "explain/case_007/report.html")  # doctest: +SKIP
    """
    return atomic_write_text(path, render_case_report(case))
