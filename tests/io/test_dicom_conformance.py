"""pydicom's and pydicom-data's test files: each decodes like pydicom or gets a specific reason."""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medimg.errors import DataError
from medimg.io.dicom.assemble import load_series, read_stored_pixels
from medimg.io.dicom.geometry import sort_slices
from medimg.io.dicom.headers import read_header
from medimg.io.scan import scan


def _test_files() -> list[str]:
    from pydicom.data import get_testdata_files

    files = sorted(f for f in get_testdata_files() if os.path.isfile(f))
    if not any("data_store" in f for f in files):
        if os.environ.get("CI") == "true":
            pytest.fail("pydicom-data is required under CI")
        pytest.skip("pydicom-data is not installed")
    return files


def _reference(path: str) -> tuple[np.ndarray | None, str]:
    """pydicom's own decode (or its failure)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path).pixel_array, ""
    except Exception as exc:
        return None, type(exc).__name__


def test_every_test_file_decodes_like_pydicom_or_has_a_reason() -> None:
    start = time.perf_counter()
    outcome: Counter[str] = Counter()
    syntaxes: Counter[str] = Counter()
    for path in _test_files():
        try:
            h = read_header(path)
        except DataError as exc:
            assert str(exc).startswith(f"{path}: ") and len(str(exc)) > len(path) + 10
            outcome["no header"] += 1
            continue
        syntaxes[h.transfer_syntax] += 1
        if not h.has_pixels:
            outcome["no pixels"] += 1
            continue
        ref, failure = _reference(path)
        try:
            ours = read_stored_pixels(h)
        except DataError as exc:
            assert ref is None, f"{path}: pydicom decodes it but medimg says {exc}"
            assert "cannot decode pixel data" in str(exc) and failure in str(exc)
            outcome["undecodable, reason given"] += 1
            continue
        assert ref is not None
        np.testing.assert_array_equal(ours.reshape(ref.shape), ref, err_msg=path)
        outcome["decoded equal"] += 1
        # the volume path: a float volume matching pydicom's values, or a specific refusal
        try:
            vol = load_series([path])
        except DataError as exc:
            assert str(exc).startswith(f"{path}") and ":" in str(exc)
            outcome["volume refused, reason given"] += 1
            continue
        frames = ref.reshape(h.number_of_frames, h.rows, h.columns).astype(np.float64)
        if h.number_of_frames > 1:
            frames = frames[sort_slices(h.frame_positions, h.orientation).order]
        if h.frame_rescale is not None:
            order = sort_slices(h.frame_positions, h.orientation).order
            expected = frames * h.frame_rescale[order, :1, None] + h.frame_rescale[order, 1:, None]
        else:
            expected = frames * h.rescale_slope + h.rescale_intercept
        np.testing.assert_allclose(vol.data.transpose(2, 1, 0), expected, rtol=1e-6, err_msg=path)
        outcome["volume equal"] += 1
    elapsed = time.perf_counter() - start
    print(dict(outcome), dict(syntaxes), f"{elapsed:.1f}s")
    assert outcome["decoded equal"] > 150 and outcome["volume equal"] > 20
    for ts in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.5",
               "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
               "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.1.99"):  # fmt: skip
        assert syntaxes[ts] > 0, f"transfer syntax {ts} not covered"


def test_scan_of_all_test_files_never_crashes(tmp_path: Path) -> None:
    root = tmp_path / "all"
    for i, path in enumerate(_test_files()):
        dest = root / f"{i // 50}" / f"{i:03d}_{Path(path).name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    result = scan(root, workers=2)
    assert result.manifest and result.excluded
    assert all(e.reason for e in result.excluded)
    assert all(row["series_key"].startswith("series-") for row in result.manifest)
