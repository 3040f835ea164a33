"""One entry point for images: a NIfTI file or a DICOM series folder becomes a :class:`Volume`.

``load_image`` is what manifests, the MONAI reader and the CLI use. A DICOM path
may name one series of a folder that holds several: ``"study/ct#series-3f9a..."``
(the pseudonymous ``series_key`` written by ``medimg scan``).

NIfTI files are checked before use: the file must hold as many bytes as its
header promises (SimpleITK zero-fills truncated files silently), no axis may be
empty, and NaN/inf voxels are refused unless allowed. The header is parsed from the
first bytes of the stream and an image promising more than ``MEDIMG_MAX_VOXELS``
voxels is refused before anything is inflated; ``.nii.gz`` is then inflated as a
stream, with ISA-L (``isal``) when installed, never past what the header promises.
Header geometry (pixdim, singular affines, qform vs sform) is checked in
:mod:`medimg.io.nifti_geometry`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

from medimg.errors import ConfigError, DataError, GeometryError
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


DEFAULT_MAX_VOXELS = 2**29  # 2 GiB of voxel data once held as float32


def max_voxels() -> int:
    """The most voxels one image may promise: ``MEDIMG_MAX_VOXELS`` or 2**29 (2 GiB as float32).

    The check runs on the header, before anything is inflated, so a small ``.nii.gz`` that
    would inflate to many gigabytes is refused at once.

    Example:
        >>> max_voxels() > 0
        True
    """
    text = os.environ.get("MEDIMG_MAX_VOXELS", "").strip()
    if not text:
        return DEFAULT_MAX_VOXELS
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"MEDIMG_MAX_VOXELS={text!r}: expected a positive whole number of voxels") from None
    if value <= 0:
        raise ConfigError(f"MEDIMG_MAX_VOXELS={text!r}: expected a positive whole number of voxels")
    return value


def _open_stream(path: Path) -> BinaryIO:
    """The file's bytes, inflated on the fly for ``.gz`` (ISA-L when installed, else zlib)."""
    if not str(path).lower().endswith(".gz"):
        return open(path, "rb")
    try:
        from isal import igzip as gz
    except ImportError:  # pragma: no cover - isal is a dependency
        import gzip as gz  # type: ignore[no-redef]
    return gz.open(path, "rb")  # type: ignore[return-value]


def _read_at_most(stream: BinaryIO, n: int, path: Path, head: bytes = b"") -> memoryview:
    """``head`` then up to ``n - len(head)`` more bytes, read into one buffer (fewer only at the end).

    Reading into a preallocated buffer keeps streamed ISA-L inflation as fast as a one-shot
    ``decompress`` while never holding more than ``n`` bytes. Corrupt gzip is a DataError.
    """
    buf = bytearray(max(n, len(head)))
    view = memoryview(buf)
    view[: len(head)] = head
    got = len(head)
    try:
        while got < n:
            k = stream.readinto(view[got : min(n, got + (1 << 24))])  # type: ignore[attr-defined]
            if not k:
                break
            got += k
    except (EOFError, OSError, ValueError) as exc:
        raise DataError(f"{path}: truncated or corrupt gzip stream ({type(exc).__name__}: {exc})") from exc
    return view[:got]


def _parse_header(head: bytes, path: Path) -> Any:
    import nibabel as nib

    from medimg.io.nifti_geometry import check_pixdim

    if len(head) < 348:
        raise DataError(f"{path}: {len(head)} bytes, shorter than a NIfTI header (348 bytes)")
    sizeof = int.from_bytes(head[:4], "little")
    klass = nib.Nifti2Header if sizeof in (540, 0x1C020000) else nib.Nifti1Header
    try:
        raw = klass.from_fileobj(io.BytesIO(head), check=False)
        check_pixdim(raw, path)  # before nibabel's checks, which would set a 0 to 1 mm
        return klass.from_fileobj(io.BytesIO(head), check=True)
    except GeometryError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: not a valid NIfTI header ({type(exc).__name__}: {exc})") from exc


def read_nifti_geometry(
    path: str | os.PathLike[str], affine_policy: str = "refuse"
) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine (RAS) of a NIfTI file from its header alone, checked like :func:`read_nifti`.

    Example:
        >>> shape, affine = read_nifti_geometry("case_000/label.nii.gz")  # doctest: +SKIP
    """
    from medimg.io.nifti_geometry import choose_affine

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found (expected a NIfTI image .nii or .nii.gz)")
    with _open_stream(p) as stream:
        header = _parse_header(bytes(_read_at_most(stream, 540, p)), p)
    affine, _flags = choose_affine(header, p, affine_policy)
    return tuple(int(s) for s in header.get_data_shape()), affine


def _read_voxels(path: Path) -> tuple[Any, np.ndarray]:
    """Header first, then at most ``offset + need + 1`` bytes: never more than the header promises."""
    with _open_stream(path) as stream:
        head = bytes(_read_at_most(stream, 540, path))
        header = _parse_header(head, path)
        shape = tuple(int(s) for s in header.get_data_shape())
        if not shape or min(shape) <= 0:
            raise DataError(f"{path}: zero-sized axis in shape {shape}")
        count = int(np.prod(shape, dtype=np.int64))
        limit = max_voxels()
        if count > limit:
            raise DataError(
                f"{path}: header promises {count} voxels (shape {shape}), more than the limit of {limit}; "
                "raise MEDIMG_MAX_VOXELS if this image is genuine"
            )
        offset = int(header.get_data_offset())
        stored = header.get_data_dtype()
        need = count * stored.itemsize
        raw = _read_at_most(stream, offset + need + 1, path, head)
    if len(raw) < offset + need:
        raise DataError(
            f"{path}: truncated: {max(len(raw) - offset, 0)} of {need} voxel bytes present (shape {shape}, {stored})"
        )
    data = np.frombuffer(raw, dtype=stored, count=count, offset=offset).reshape(shape, order="F")
    return header, data


def read_nifti(
    path: str | os.PathLike[str],
    dtype: np.dtype | type = np.float32,
    allow_nonfinite: bool = False,
    affine_policy: str = "refuse",
) -> Volume:
    """Read a NIfTI-1/2 file fast and strictly, as a RAS :class:`Volume` scaled to ``dtype``.

    The header is read first; the voxels are inflated only up to what it promises, and
    only when that is under :func:`max_voxels`.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        dtype: voxel type of the result (scaled by the header's slope/intercept).
        allow_nonfinite: keep NaN/inf voxels instead of refusing the file.
        affine_policy: qform/sform disagreement: ``"refuse"``, or trust ``"sform"``/``"qform"``
            (see :mod:`medimg.io.nifti_geometry`).

    Raises:
        DataError: file missing, truncated (fewer bytes than the header promises), an empty
            axis, more voxels than ``MEDIMG_MAX_VOXELS``, or NaN/inf voxels (unless
            ``allow_nonfinite``); the message names the file.
        GeometryError: pixdim 0/negative, a singular affine, or a qform/sform disagreement.

    Example:
        >>> vol = read_nifti("case_000/image.nii.gz")  # doctest: +SKIP
    """
    from medimg.io.nifti_geometry import choose_affine, form_codes

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found (expected a NIfTI image .nii or .nii.gz)")
    header, data = _read_voxels(p)
    affine, flags = choose_affine(header, p, affine_policy)
    slope, inter = header.get_slope_inter()
    out = data.astype(dtype)
    if slope is not None and (slope, inter or 0.0) != (1.0, 0.0):
        out *= np.asarray(slope, dtype=out.dtype)
        out += np.asarray(inter or 0.0, dtype=out.dtype)
    if not allow_nonfinite:
        check_finite(out, p)
    meta: dict[str, Any] = {"source": p.name, "zooms": tuple(float(z) for z in header.get_zooms()[:3])}
    meta.update(form_codes(header))
    meta["qa_flags"] = flags
    return Volume(out, affine, "RAS", meta)


def check_finite(data: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Refuse NaN/inf voxels, naming the file and how many there are.

    Example:
        >>> check_finite(np.array([0.0, 1.5]), "x.nii.gz")  # finite: nothing to say
    """
    if data.dtype.kind not in "fc" or np.isfinite(data).all():
        return
    bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
    raise DataError(
        f"{path}: {bad} NaN/inf voxel(s) of {np.size(data)}; fix the file, or set data.nonfinite: zero "
        "in the workflow to replace them with 0"
    )


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


def split_series_path(path: str | os.PathLike[str]) -> tuple[Path, str]:
    """``"folder#series_key"`` -> ``(Path("folder"), "series_key")``; any other path -> ``(path, "")``.

    A path that exists as written (a file or folder whose name holds ``#``) is never split.

    Example:
        >>> split_series_path("export/ct#series-3f9a")
        (PosixPath('export/ct'), 'series-3f9a')
    """
    text = str(path)
    if "#" in text and not Path(text).exists():
        base, _, key = text.partition("#")
        return Path(base), key
    return Path(text), ""


def load_image(
    path: str | os.PathLike[str],
    *,
    spacing_policy: Literal["refuse", "resample"] = "refuse",
    tilt_policy: Literal["keep", "resample", "refuse"] = "keep",
    allow_nonfinite: bool = False,
    affine_policy: str = "refuse",
) -> Volume:
    """Load a NIfTI file (RAS) or a DICOM series folder (LPS) as a float32 :class:`Volume`.

    This is medimg's one reading path: training, ``predict``, ``explain``, ``evaluate`` and
    ``convert`` all read images through it (directly or through
    :class:`medimg.io.reader.MedimgImageReader`), so what one command refuses, all refuse.

    Args:
        path: ``image.nii.gz``, a folder of one DICOM series, or ``folder#series_key``.
        spacing_policy, tilt_policy: what to do with irregular DICOM series (see ``load_series``).
        allow_nonfinite: accept NaN/inf voxels (refused by default, naming the file).
        affine_policy: NIfTI qform/sform disagreement: ``"refuse"``, ``"sform"`` or ``"qform"``.

    Example:
        >>> ct = load_image("study/ct")  # doctest: +SKIP
        >>> ct.affine_in("RAS")  # doctest: +SKIP
    """
    p, key = split_series_path(path)
    if p.is_dir():
        try:
            vol = _load_dicom(p, key or None, spacing_policy, tilt_policy)
        except (ValueError, KeyError, AttributeError, TypeError, IndexError) as exc:
            # headers the series assembler did not foresee: refuse the folder, never a traceback
            raise DataError(
                f"{p}: cannot assemble a DICOM volume from this folder ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); check every slice's geometry tags"
            ) from exc
    elif is_nifti(p):
        return read_nifti(p, allow_nonfinite=allow_nonfinite, affine_policy=affine_policy)
    elif not p.exists():
        raise DataError(f"{p}: not found (expected a NIfTI file or a DICOM series folder)")
    else:
        from medimg.io.dicom.assemble import load_series

        vol = load_series([p], spacing_policy=spacing_policy, tilt_policy=tilt_policy)  # type: ignore[arg-type]
    if not allow_nonfinite:
        check_finite(vol.data, p)
    return vol


def check_label_grid(
    image: Volume | tuple[tuple[int, ...], np.ndarray],
    label: Volume | tuple[tuple[int, ...], np.ndarray],
    image_name: str = "image",
    label_name: str = "label",
    atol: float = 1e-3,
) -> None:
    """Raise :class:`GeometryError` unless ``label`` lies on ``image``'s voxel grid (shape and affine).

    The one check of a label against its image: training data checks, the manifest (from the
    headers alone) and scoring all call it. ``image`` and ``label`` are volumes, or
    ``(shape, RAS affine)`` pairs read from headers (:func:`read_nifti_geometry`); the message
    names both files.

    Example:
        >>> check_label_grid(load_image("ct.nii.gz"), load_image("mask.nii.gz"))  # doctest: +SKIP
    """
    s_img, a_img = _grid(image)
    s_lab, a_lab = _grid(label)
    if s_img != s_lab:
        raise GeometryError(
            f"label {label_name} has shape {s_lab} but image {image_name} has shape {s_img}; "
            "a label must lie on its image's voxel grid"
        )
    diff = float(np.abs(a_img - a_lab).max())
    if diff > atol:
        raise GeometryError(
            f"label {label_name} affine differs from image {image_name} by up to {diff:.4g} mm "
            f"(tolerance {atol} mm); a label must lie on its image's voxel grid"
        )


def _grid(v: Volume | tuple[tuple[int, ...], np.ndarray]) -> tuple[tuple[int, ...], np.ndarray]:
    """Spatial shape and RAS affine of a volume, or of a ``(shape, affine)`` pair as given."""
    if isinstance(v, Volume):
        return tuple(int(s) for s in v.shape[:3]), np.asarray(v.affine_in("RAS"), dtype=float)
    shape, affine = v
    return tuple(int(s) for s in shape[:3]), np.asarray(affine, dtype=float)
