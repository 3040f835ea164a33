"""One entry point for images: a NIfTI file or a DICOM series folder becomes a :class:`Volume`.

``load_image`` is what manifests, the MONAI reader and the CLI use. A DICOM path
may name one series of a folder that holds several: ``"study/ct#series-3f9a..."``
(the pseudonymous ``series_key`` written by ``medimg scan``).

NIfTI files are checked before use: the file must hold as many bytes as its
header promises (SimpleITK zero-fills truncated files silently), no axis may be
empty, and NaN/inf voxels are refused unless allowed. ``.nii.gz`` is inflated
with ISA-L (``isal``) when installed, several times faster than zlib.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from medimg.errors import DataError, GeometryError
from medimg.io.volume import Volume

_NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | os.PathLike[str]) -> bool:
    """True when the name ends in ``.nii`` or ``.nii.gz``."""
    return str(path).lower().endswith(_NIFTI_SUFFIXES)


def is_dicom_dir(path: str | os.PathLike[str], probe: int = 16) -> bool:
    """True when ``path`` is a folder holding (in it or below) a file with the DICOM ``DICM`` prefix.

    Example:
        >>> is_dicom_dir("study/ct")  # doctest: +SKIP
        True
    """
    p = Path(str(path).split("#", 1)[0])
    if not p.is_dir():
        return False
    seen = 0
    for dirpath, _dirs, files in os.walk(p):
        for name in files:
            try:
                with open(Path(dirpath) / name, "rb") as fh:
                    fh.seek(128)
                    if fh.read(4) == b"DICM":
                        return True
            except OSError:
                pass
            seen += 1
            if seen >= probe:
                return False
    return False


def _inflate(raw: bytes, path: Path) -> bytes:
    try:
        from isal import igzip as gz
    except ImportError:  # pragma: no cover - isal is a dependency
        import gzip as gz  # type: ignore[no-redef]
    try:
        return gz.decompress(raw)
    except (EOFError, OSError, ValueError) as exc:
        raise DataError(f"{path}: truncated or corrupt gzip stream ({type(exc).__name__}: {exc})") from exc


def read_nifti(
    path: str | os.PathLike[str], dtype: np.dtype | type = np.float32, allow_nonfinite: bool = False
) -> Volume:
    """Read a NIfTI-1/2 file fast and strictly, as a RAS :class:`Volume` scaled to ``dtype``.

    Raises:
        DataError: file missing, truncated (fewer bytes than the header promises), an empty
            axis, or NaN/inf voxels (unless ``allow_nonfinite``); the message names the file.

    Example:
        >>> vol = read_nifti("case_000/image.nii.gz")  # doctest: +SKIP
    """
    import nibabel as nib

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found (expected a NIfTI image .nii or .nii.gz)")
    raw = p.read_bytes()
    if str(p).lower().endswith(".gz"):
        raw = _inflate(raw, p)
    if len(raw) < 348:
        raise DataError(f"{p}: {len(raw)} bytes, shorter than a NIfTI header (348 bytes)")
    sizeof = int.from_bytes(raw[:4], "little")
    klass = nib.Nifti2Header if sizeof in (540, 0x1C020000) else nib.Nifti1Header
    try:
        header = klass.from_fileobj(_Buffer(raw), check=True)
    except Exception as exc:
        raise DataError(f"{p}: not a valid NIfTI header ({type(exc).__name__}: {exc})") from exc
    shape = tuple(int(s) for s in header.get_data_shape())
    if not shape or min(shape) == 0:
        raise DataError(f"{p}: zero-sized axis in shape {shape}")
    offset = int(header.get_data_offset())
    stored = header.get_data_dtype()
    need = int(np.prod(shape)) * stored.itemsize
    if len(raw) < offset + need:
        raise DataError(
            f"{p}: truncated: {max(len(raw) - offset, 0)} of {need} voxel bytes present (shape {shape}, {stored})"
        )
    data = np.frombuffer(raw, dtype=stored, count=int(np.prod(shape)), offset=offset).reshape(
        shape, order="F"
    )
    slope, inter = header.get_slope_inter()
    out = data.astype(dtype)
    if slope is not None and (slope, inter or 0.0) != (1.0, 0.0):
        out *= np.asarray(slope, dtype=out.dtype)
        out += np.asarray(inter or 0.0, dtype=out.dtype)
    if not allow_nonfinite and out.dtype.kind == "f" and not np.isfinite(out).all():
        bad = int(np.size(out) - np.count_nonzero(np.isfinite(out)))
        raise DataError(f"{p}: {bad} NaN/inf voxel(s); fix the file or pass allow_nonfinite=True")
    affine = header.get_best_affine()
    meta = {"source": p.name, "zooms": tuple(float(z) for z in header.get_zooms()[:3])}
    return Volume(out, np.asarray(affine, dtype=np.float64), "RAS", meta)


class _Buffer:
    """Minimal file-like view of bytes for nibabel's header parser (no copy)."""

    def __init__(self, raw: bytes) -> None:
        self._raw, self._pos = memoryview(raw), 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._raw) if n < 0 else self._pos + n
        chunk = bytes(self._raw[self._pos : end])
        self._pos = min(end, len(self._raw))
        return chunk

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = pos if whence == 0 else self._pos + pos if whence == 1 else len(self._raw) + pos
        return self._pos

    def tell(self) -> int:
        return self._pos


def _load_dicom(path: Path, series_key: str | None, spacing_policy: str, tilt_policy: str) -> Volume:
    from medimg.io.dicom.assemble import load_series
    from medimg.io.dicom.discover import discover

    series, excluded = discover(path)
    volumes = [s for s in series if s.kind == "volume"]
    if series_key:
        volumes = [s for s in volumes if s.keys()["series_key"] == series_key]
        if not volumes:
            raise DataError(
                f"{path}: no usable series with key {series_key} (was the manifest made with another pseudonym key?)"
            )
    if not volumes:
        reasons = "; ".join(
            sorted({f"{s.kind}: {s.reason}" for s in series} | {e.reason for e in excluded[:3]})
        )
        raise DataError(f"{path}: no usable DICOM volume ({reasons or 'no DICOM files'})")
    if len(volumes) > 1:
        keys = ", ".join(s.keys()["series_key"] for s in volumes)
        raise DataError(f"{path}: {len(volumes)} usable series ({keys}); name one as '{path}#<series_key>'")
    vol = load_series(volumes[0].headers, spacing_policy=spacing_policy, tilt_policy=tilt_policy)  # type: ignore[arg-type]
    vol.meta.update(volumes[0].keys())
    vol.meta["qa_flags"] = sorted(set(vol.meta["qa_flags"]) | set(volumes[0].flags))
    return vol


def load_image(
    path: str | os.PathLike[str],
    *,
    spacing_policy: Literal["refuse", "resample"] = "refuse",
    tilt_policy: Literal["keep", "resample", "refuse"] = "keep",
    allow_nonfinite: bool = False,
) -> Volume:
    """Load a NIfTI file (RAS) or a DICOM series folder (LPS) as a float32 :class:`Volume`.

    Args:
        path: ``image.nii.gz``, a folder of one DICOM series, or ``folder#series_key``.
        spacing_policy, tilt_policy: what to do with irregular DICOM series (see ``load_series``).
        allow_nonfinite: accept NaN/inf voxels in NIfTI files.

    Example:
        >>> ct = load_image("study/ct")  # doctest: +SKIP
        >>> ct.affine_in("RAS")  # doctest: +SKIP
    """
    text = str(path)
    base, _, key = text.partition("#") if "#" in text and not Path(text).exists() else (text, "", "")
    p = Path(base)
    if p.is_dir():
        return _load_dicom(p, key or None, spacing_policy, tilt_policy)
    if is_nifti(p):
        return read_nifti(p, allow_nonfinite=allow_nonfinite)
    if not p.exists():
        raise DataError(f"{p}: not found (expected a NIfTI file or a DICOM series folder)")
    from medimg.io.dicom.assemble import load_series

    return load_series([p], spacing_policy=spacing_policy, tilt_policy=tilt_policy)


def check_label_grid(
    image: Volume, label: Volume, image_name: str = "image", label_name: str = "label", atol: float = 1e-3
) -> None:
    """Raise :class:`GeometryError` unless ``label`` lies on ``image``'s voxel grid (shape and affine).

    Example:
        >>> check_label_grid(load_image("ct.nii.gz"), load_image("mask.nii.gz"))  # doctest: +SKIP
    """
    if image.shape[:3] != label.shape[:3]:
        raise GeometryError(
            f"{label_name}: shape {label.shape[:3]} differs from {image_name} shape {image.shape[:3]}"
        )
    diff = float(np.abs(image.affine_in("RAS") - label.affine_in("RAS")).max())
    if diff > atol:
        raise GeometryError(
            f"{label_name}: affine differs from {image_name} by up to {diff:.4g} mm (tolerance {atol})"
        )
