"""Self-contained HTML report for one explained case.

Everything is inline: images are base64 PNGs, styles are in the page, there are no scripts,
fonts or links to other hosts, so the file opens offline and can be archived as is. The page
names the case only by its pseudonymous key (no patient data).
"""

from __future__ import annotations

import base64
import html
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

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1b1f24;max-width:1100px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:16px 0 6px}table{border-collapse:collapse;margin:6px 0}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:left}th{background:#f3f4f6}
img{max-width:100%;display:block;margin:4px 0;border:1px solid #eee}.muted{color:#666;font-size:12px}
.verdict{padding:8px 12px;border-radius:4px;margin:8px 0;font-size:14px}.pass{background:#e7f6ea}
.fail{background:#fde8e8}.note{background:#fff7e0;padding:6px 10px;font-size:13px}
"""


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


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


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


def _method_section(case: CaseExplanation, res: MethodResult) -> str:
    m = res.saliency
    parts = [f"<h2>{html.escape(m.method)}</h2>"]
    rows: list[tuple[str, Any]] = [("target", ", ".join(f"{k} = {v}" for k, v in m.target.items()) or "-")]
    rows += [(k, _fmt(v)) for k, v in m.params.items()]
    rows.append(("map file", res.nifti or "not written"))
    parts.append(_table(rows))
    if m.grid_note:
        parts.append(f'<p class="note">{html.escape(m.grid_note)}</p>')
    peak = m.peak_index
    parts.append(f"<h3>Through the peak of the map (voxel {peak})</h3>")
    outline = case.structure
    png = triplanar_png(case.image, m.array, case.affine, peak, overlay_label=m.method, outline=outline)
    parts.append(_img(png, "map peak"))
    centre = structure_centre(case.structure)
    if centre is not None:
        where = {True: "inside", False: "outside", None: "not checked against"}[res.peak_in_structure]
        parts.append(f"<h3>Through the lesion/organ centre (voxel {centre})</h3>")
        parts.append(f"<p>The peak of the map lies <b>{where}</b> the lesion/organ mask (green outline).</p>")
        png = triplanar_png(case.image, m.array, case.affine, centre, overlay_label=m.method, outline=outline)
        parts.append(_img(png, "structure centre"))
    else:
        parts.append('<p class="muted">No lesion/organ mask for this case: only the peak view is shown.</p>')
    parts.append("<h3>Sanity checks</h3>")
    status = {True: "pass", False: "fail", None: "note"}[res.passed]
    parts.append(f'<div class="verdict {status}">{html.escape(res.verdict)}</div>')
    rows = []
    if res.randomisation is not None:
        r = res.randomisation
        rows += [
            ("randomisation: Spearman (trained vs random weights)", f"{r.spearman:.3f}"),
            ("randomisation: SSIM (trained vs random weights)", f"{r.ssim:.3f}"),
            ("randomisation: threshold (both below = pass)", f"{r.threshold:.2f}"),
        ]
    f = res.faithfulness
    if f is not None:
        rows += [("deletion AUC (lower is better)", f"{f.deletion_auc:.3f}")]
        if f.random_deletion_auc is not None:
            rows += [("deletion AUC, random voxel order", f"{f.random_deletion_auc:.3f}")]
        rows += [("insertion AUC (higher is better)", f"{f.insertion_auc:.3f}")]
    if rows:
        parts.append(_table(rows))
    if f is not None:
        png = curve_png(f.fractions, {"deletion": f.deletion, "insertion": f.insertion}, m.method)
        parts.append(_img(png, "deletion and insertion curves"))
    return "\n".join(parts)


def render_case_report(case: CaseExplanation) -> str:
    """The HTML text of a case report.

    Example:
        >>> html_text = render_case_report(case)  # doctest: +SKIP
    """
    key = html.escape(case.case_key)
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
    sections = "\n".join(_method_section(case, r) for r in case.results)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>medimg explain: {key}</title><style>{STYLE}</style></head>
<body>
<h1>Case {key}</h1>
<p class="muted">Saliency report generated by medimg. Maps show where the model's output is sensitive;
they are not a diagnosis. Check the sanity verdict before reading a map.</p>
<h2>Prediction</h2>
{_table(pred_rows)}
<h2>Model</h2>
{_table(model_rows)}
{sections}
</body></html>
"""


def write_case_report(case: CaseExplanation, path: str | os.PathLike[str]) -> Path:
    """Write the case report atomically and return its path.

    Example:
        >>> write_case_report(case, "explain/case_007/report.html")  # doctest: +SKIP
    """
    return atomic_write_text(path, render_case_report(case))
