"""Reading and writing images with their geometry (NIfTI, DICOM) and atomic file output."""

from medimg.io.atomic import atomic_write, atomic_write_bytes, atomic_write_text
from medimg.io.volume import Volume

__all__ = ["Volume", "atomic_write", "atomic_write_bytes", "atomic_write_text"]
