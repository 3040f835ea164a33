"""The algorithm and labels the DICOM SEG, DICOM SR and PACS tests write the phantom's outputs with."""

from __future__ import annotations

from medimg.inference.dicom_seg import AlgorithmInfo

ALGO = AlgorithmInfo(name="phantom-unet", version="2.1.0", weights_sha256="5e" * 32)
LABELS = {1: "liver", 3: "tumor"}
