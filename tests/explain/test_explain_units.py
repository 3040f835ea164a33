"""Small pieces: display orientation, voxel budget, failure reasons, path scrubbing, index order."""

from __future__ import annotations

import numpy as np
import pytest

from medimg.errors import DataError
from medimg.explain.failures import failure_reason, safe_key, scrub_paths
from medimg.explain.figures import index_to_ras, reorient_to_ras, triplanar_png
from medimg.explain.index import IndexEntry, render_cohort_index
from medimg.explain.maps import coarse_shape, method_slug, upsample_to
from medimg.explain.report import structure_centre
from medimg.explain.runner import ExplainCase


def test_display_reorientation_of_an_lps_ordered_array():
    # voxel order L->R reversed (x axis points to patient left), anisotropic
    affine = np.diag([-0.7, -0.9, 2.5, 1.0])
    data = np.zeros((10, 8, 4), np.float32)
    data[1, 2, 3] = 1.0  # i = 1 lies at x = -0.7 mm (RAS: towards the patient's left)
    ras, spacing, ornt = reorient_to_ras(data, affine)
    assert ras.shape == (10, 8, 4) and spacing == (0.7, 0.9, 2.5)
    idx = index_to_ras((1, 2, 3), data.shape, ornt)
    assert idx == (8, 5, 3) and ras[idx] == 1.0
    # axis permutation: voxel axis i -> y, j -> z, k -> x
    perm = np.array([[0, 0, 2.0, 0], [1.5, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1]])
    ras2, sp2, ornt2 = reorient_to_ras(np.zeros((3, 4, 5)), perm)
    assert ras2.shape == (5, 3, 4) and sp2 == (2.0, 1.5, 1.0)
    assert index_to_ras((1, 2, 3), (3, 4, 5), ornt2) == (3, 1, 2)


def test_triplanar_png_is_a_png():
    img = np.random.default_rng(0).random((12, 10, 6)).astype(np.float32)
    png = triplanar_png(img, img, np.diag([1.0, 1.0, 2.0, 1.0]), (6, 5, 3), "t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_coarse_shape_and_upsample():
    assert coarse_shape((64, 64, 64), 64**3) == (64, 64, 64)
    small = coarse_shape((256, 256, 128), 1_000_000, multiple=16)
    assert np.prod(small) <= 1_000_000 and all(s % 16 == 0 for s in small)
    assert upsample_to(np.ones((2, 3, 4), np.float32), (4, 6, 8)).shape == (4, 6, 8)
    assert method_slug("gradcam++") == "gradcam_pp"


def test_failure_reason_prefers_medimg_errors_and_is_one_line():
    try:
        try:
            raise DataError("/x/a.nii.gz: truncated")
        except DataError as inner:
            raise RuntimeError("applying transform <Load object at 0xdeadbeef>\nTraceback...") from inner
    except RuntimeError as exc:
        assert failure_reason(exc) == "DataError: /x/a.nii.gz: truncated"
    wrapped = RuntimeError(
        "applying transform\nTraceback ...\nmedimg.errors.DataError: /x/b.nii.gz: bad header\n"
    )
    assert failure_reason(wrapped) == "DataError: /x/b.nii.gz: bad header"
    assert len(failure_reason(ValueError("x" * 1000))) == 300


def test_scrub_paths_and_safe_key(tmp_path):
    case = ExplainCase("c7", tmp_path / "SMITH^JANE" / "ct.nii.gz", mask=tmp_path / "SMITH^JANE" / "m.nii.gz")
    text = f"{tmp_path}/SMITH^JANE/ct.nii.gz: bad; see {tmp_path}/SMITH^JANE"
    out = scrub_paths(text, case)
    assert "SMITH" not in out and out == "<image of c7>: bad; see <folder of c7>"
    assert safe_key("../a b") == ".._a_b" and "/" not in safe_key("x/y")


def test_structure_centre():
    m = np.zeros((9, 9, 9), bool)
    m[2:5, 6:9, 0:3] = True
    assert structure_centre(m) == (3, 7, 1)
    assert structure_centre(np.zeros((3, 3, 3), bool)) is None and structure_centre(None) is None


@pytest.mark.parametrize("sort_by", ["confidence", "error"])
def test_index_sorted_descending_with_failures_last(sort_by):
    entries = [
        IndexEntry("a", report="a/report.html", confidence=0.6, error=0.4),
        IndexEntry("b", status="failed", reason="DataError: <image of b>: truncated"),
        IndexEntry("c", report="c/report.html", confidence=0.99, error=0.01),
        IndexEntry("d", report="d/report.html", confidence=0.8, error=0.9),
    ]
    page = render_cohort_index(entries, sort_by=sort_by)
    positions = {k: page.index(f'data-v="{k}"') for k in ("a", "b", "c", "d")}
    ranked = sorted(positions, key=positions.get)
    assert ranked == (["c", "d", "a", "b"] if sort_by == "confidence" else ["d", "a", "c", "b"])
    with pytest.raises(ValueError, match="cannot sort"):
        render_cohort_index(entries, sort_by="name")
