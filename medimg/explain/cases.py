"""One case to explain: its key, its image and what is known about it (reference class, mask)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class ExplainCase:
    """One case to explain.

    Attributes:
        key: pseudonymous case key (report title and folder name; never a patient name or ID).
        image: image path (NIfTI file or DICOM series folder), as ``preprocess`` accepts it.
        reference: reference class, if known (for the index's error column).
        mask: optional lesion/organ mask in the image's geometry (second overlay's centre).
    """

    key: str
    image: str | os.PathLike[str]
    reference: int | None = None
    mask: str | os.PathLike[str] | None = None
