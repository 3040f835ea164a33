"""Tri-planar overlays of a map on its image, rendered to PNG bytes for the HTML reports.

Arrays are reoriented to the closest RAS axes before slicing, so the panels are true axial,
coronal and sagittal views whatever the voxel order of the scan; pixels keep their physical
aspect ratio, and the panels are in radiological convention (patient right on the viewer's
left), with the sides labelled.
"""

from __future__ import annotations

import io
from typing import Any

import nibabel as nib
import numpy as np


def reorient_to_ras(
    array: np.ndarray, affine: np.ndarray
) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """``(array in closest-RAS axis order, its voxel spacing, orientation table)``.

    The orientation table (nibabel ``ornt``) converts voxel indices with :func:`index_to_ras`.

    Example:
        >>> a, sp, ornt = reorient_to_ras(np.zeros((2, 3, 4)), np.diag([-1.0, 1.0, 2.0, 1.0]))
        >>> a.shape, sp
        ((2, 3, 4), (1.0, 1.0, 2.0))
    """
    ornt = nib.orientations.io_orientation(np.asarray(affine, dtype=np.float64))
    out = nib.orientations.apply_orientation(np.asarray(array), ornt)
    zooms = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    spacing = [0.0, 0.0, 0.0]
    for src_axis, (dst_axis, _flip) in enumerate(ornt):
        spacing[int(dst_axis)] = float(zooms[src_axis])
    return out, (spacing[0], spacing[1], spacing[2]), ornt


def index_to_ras(index: tuple[int, ...], shape: tuple[int, ...], ornt: np.ndarray) -> tuple[int, int, int]:
    """Voxel index in the source array -> index in the array returned by :func:`reorient_to_ras`.

    Example:
        >>> ornt = np.array([[0, -1], [1, 1], [2, 1]])
        >>> index_to_ras((0, 1, 2), (5, 5, 5), ornt)
        (4, 1, 2)
    """
    new = [0, 0, 0]
    for src_axis, (dst_axis, flip) in enumerate(ornt):
        i = int(index[src_axis])
        new[int(dst_axis)] = i if flip > 0 else int(shape[src_axis]) - 1 - i
    return new[0], new[1], new[2]


def triplanar_png(
    image: np.ndarray,
    overlay: np.ndarray,
    affine: np.ndarray,
    point: tuple[int, int, int],
    title: str = "",
    overlay_label: str = "saliency",
    threshold: float = 0.2,
    outline: np.ndarray | None = None,
) -> bytes:
    """Axial, coronal and sagittal slices through ``point`` with ``overlay`` over ``image``.

    Args:
        image: ``(D, H, W)`` intensities.
        overlay: map on the same grid (values shown where above ``threshold`` of its range).
        affine: voxel -> mm affine of the grid (RAS).
        point: voxel index (source order) the three planes pass through.
        title: figure title.
        overlay_label: colour-bar label.
        threshold: fraction of the overlay's range below which it is transparent.
        outline: optional boolean mask on the same grid (lesion/organ), drawn as a green contour.

    Returns:
        PNG bytes.

    Example:
        >>> png = triplanar_png(img, cam, affine, (10, 12, 8), "Grad-CAM peak")  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img, sp, ornt = reorient_to_ras(image, affine)
    ovl, _, _ = reorient_to_ras(overlay, affine)
    out = None if outline is None else reorient_to_ras(np.asarray(outline, dtype=np.float32), affine)[0]
    x, y, z = index_to_ras(point, image.shape, ornt)
    lo, hi = np.percentile(img, [1, 99.5]) if img.size else (0.0, 1.0)
    vmin, vmax = float(np.min(ovl)), float(np.max(ovl))
    vmax = vmax if vmax > vmin else vmin + 1.0
    cut = vmin + threshold * (vmax - vmin)
    cuts, panels = _triplanar_panels(img, ovl, sp, (x, y, z))
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4), dpi=80, layout="constrained")
    mappable = None
    for ax, panel in zip(axes, panels, strict=True):
        contour = None if out is None else out[cuts[panel[0]]]
        mappable = _draw_panel(ax, panel, (lo, hi), (vmin, vmax, cut), contour)
    if mappable is not None:
        bar = fig.colorbar(mappable, ax=list(axes), shrink=0.85)
        bar.set_label(overlay_label)
    if title:
        fig.suptitle(title, fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _triplanar_panels(
    img: np.ndarray, ovl: np.ndarray, sp: tuple[float, float, float], point: tuple[int, int, int]
) -> tuple[dict[str, tuple], list[tuple]]:
    """The three cuts through ``point`` and, per panel, ``(name, image 2D, overlay 2D, aspect,
    horizontal side labels, crosshair)`` with rows along the vertical axis."""
    x, y, z = point
    cuts = {
        "axial": (slice(None), slice(None), z),
        "coronal": (slice(None), y, slice(None)),
        "sagittal": (x, slice(None), slice(None)),
    }
    panels = [
        ("axial", img[cuts["axial"]].T, ovl[cuts["axial"]].T, sp[1] / sp[0], ("R", "L"), (x, y)),
        ("coronal", img[cuts["coronal"]].T, ovl[cuts["coronal"]].T, sp[2] / sp[0], ("R", "L"), (x, z)),
        ("sagittal", img[cuts["sagittal"]].T, ovl[cuts["sagittal"]].T, sp[2] / sp[1], ("P", "A"), (y, z)),
    ]
    return cuts, panels


def _draw_panel(
    ax: Any,
    panel: tuple,
    window: tuple[float, float],
    overlay_range: tuple[float, float, float],
    contour: np.ndarray | None,
) -> Any:
    """Draw one panel: image, thresholded overlay, outline contour, crosshair, title and side labels."""
    name, base, over, aspect, sides, (cx, cy) = panel
    lo, hi = window
    vmin, vmax, cut = overlay_range
    ax.imshow(base, cmap="gray", origin="lower", aspect=aspect, vmin=lo, vmax=hi, interpolation="nearest")
    masked = np.ma.masked_less(over, cut)
    mappable = ax.imshow(
        masked,
        cmap="inferno",
        origin="lower",
        aspect=aspect,
        vmin=vmin,
        vmax=vmax,
        alpha=0.6,
        interpolation="nearest",
    )
    if contour is not None and contour.any():
        ax.contour(contour.T, levels=[0.5], colors="lime", linewidths=0.9, origin="lower")
    ax.axhline(cy, color="cyan", lw=0.6, alpha=0.7)
    ax.axvline(cx, color="cyan", lw=0.6, alpha=0.7)
    if name != "sagittal":
        ax.invert_xaxis()  # radiological convention: patient right on the viewer's left
    ax.set_title(name, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    # sides = (label on the viewer's left, label on the viewer's right)
    ax.text(0.02, 0.5, sides[0], transform=ax.transAxes, color="w")
    ax.text(0.93, 0.5, sides[1], transform=ax.transAxes, color="w")
    return mappable


def curve_png(fractions: list[float], curves: dict[str, list[float]], title: str = "") -> bytes:
    """A small line plot (score against fraction of voxels changed) as PNG bytes.

    Example:
        >>> png = curve_png([0, 0.5, 1], {"deletion": [1, 0.2, 0.1]})
        >>> png[:4] == b"\\x89PNG"
        True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3), dpi=80)
    for name, values in curves.items():
        ax.plot(fractions, values, label=name)
    ax.set_xlabel("fraction of voxels, in map order")
    ax.set_ylabel("target score")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
