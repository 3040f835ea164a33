"""What medimg keeps of one DICOM file's header: :class:`SliceHeader`, and :class:`FrameTags` per frame.

The records only; :func:`medimg.io.dicom.headers.read_header` fills them, with the help of
:mod:`~medimg.io.dicom.enhanced` (per-frame functional groups) and :mod:`~medimg.io.dicom.mosaic`
(Siemens and UIH mosaics), which read and write these records and so import them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medimg.io.dicom.csa import CsaInfo


@dataclass(frozen=True)
class FrameTags:
    """What tells one frame of an enhanced image from another (``None`` where absent)."""

    position: tuple[float, float, float] | None
    slope: float = 1.0
    intercept: float = 0.0
    temporal: int | None = None  # TemporalPositionIndex
    volume_key: tuple[int, ...] | None = None  # DimensionIndexValues without the in-stack position
    echo_time: float | None = None  # EffectiveEchoTime (ms)
    b_value: float | None = None
    gradient: tuple[float, ...] | None = None  # DiffusionGradientOrientation
    trigger: float | None = None  # NominalCardiacTriggerDelayTime (ms)
    component: str = ""  # ComplexImageComponent: MAGNITUDE, PHASE, REAL, IMAGINARY
    stack: str = ""  # StackID
    acq_time: float | None = None  # FrameAcquisitionDateTime, seconds since midnight


@dataclass
class SliceHeader:
    """What medimg needs from one DICOM file, read without its pixels.

    Identity fields (``patient_id``) are kept only to group files and derive
    pseudonymous keys; they are excluded from ``repr`` and never written out.
    """

    path: Path
    sop_class_uid: str = ""
    sop_instance_uid: str = field(default="", repr=False)
    study_uid: str = field(default="", repr=False)
    series_uid: str = field(default="", repr=False)
    frame_of_reference_uid: str = field(default="", repr=False)
    patient_id: str = field(default="", repr=False)
    modality: str = ""
    manufacturer: str = ""
    model: str = ""
    body_part: str = ""
    image_type: tuple[str, ...] = ()
    transfer_syntax: str = ""
    rows: int = 0
    columns: int = 0
    samples_per_pixel: int = 1
    photometric: str = ""
    bits_allocated: int = 0
    bits_stored: int = 0
    pixel_representation: int = 0
    number_of_frames: int = 1
    pixel_spacing: tuple[float, float] | None = None
    orientation: tuple[float, ...] | None = None  # ImageOrientationPatient (6 values)
    position: tuple[float, float, float] | None = None  # ImagePositionPatient
    frame_positions: np.ndarray | None = field(default=None, repr=False)  # enhanced multi-frame: (F, 3)
    frame_rescale: np.ndarray | None = field(
        default=None, repr=False
    )  # (F, 2) slope, intercept when they vary
    frame_note: str = ""  # why an enhanced multi-frame image is not one volume
    frame_tags: list[FrameTags] | None = field(default=None, repr=False)  # enhanced: one per frame
    frame_select: tuple[float | None, str] | None = None  # enhanced: (echo time, component) of one split
    mosaic: int = 0  # Siemens mosaic: number of slices tiled in the image (0 when not a mosaic)
    tile_rows: int = 0
    tile_columns: int = 0
    csa: CsaInfo | None = field(default=None, repr=False)
    acquisition: dict[str, Any] = field(default_factory=dict, repr=False)  # BIDS-style, never PHI
    slice_thickness: float | None = None
    slice_spacing: float | None = None  # SpacingBetweenSlices
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    instance_number: int | None = None
    acquisition_number: int | None = None
    echo_number: int | None = None
    temporal_position: int | None = None
    series_number: int | None = None
    trigger_time: float | None = None
    acquisition_time: float | None = None  # AcquisitionTime, seconds since midnight
    echo_time: float | None = None
    b_value: float | None = None
    gradient: tuple[float, float, float] | None = None  # diffusion gradient direction
    component: str = ""  # MAGNITUDE, PHASE, REAL or IMAGINARY when the ImageType says so
    has_pixels: bool = False
    pixel_offset: int | None = None  # byte offset of native pixel bytes (None when encapsulated)
    pixel_length: int | None = None
    file_size: int = 0

    @property
    def expected_pixel_bytes(self) -> int:
        """Bytes a native (uncompressed) pixel data element must hold."""
        return (
            self.rows
            * self.columns
            * self.samples_per_pixel
            * self.number_of_frames
            * (self.bits_allocated // 8)
        )

    @property
    def n_slices(self) -> int:
        """Slices this file holds: the mosaic's tiles, the frames of a multi-frame image, or 1."""
        return self.mosaic or self.number_of_frames

    @property
    def is_stack(self) -> bool:
        """True for a file holding several slices (mosaic or multi-frame)."""
        return self.n_slices > 1 or self.mosaic > 0

    @property
    def is_localizer(self) -> bool:
        return any(t in ("LOCALIZER", "SCOUT", "SCANOGRAM") for t in self.image_type)
