"""medimg: deep learning on medical images, from DICOM folders to reports.

Layers (see ``docs/architecture.md``): ``io`` → ``data`` → ``models`` →
``training`` → ``inference`` / ``evaluation`` / ``explain`` → ``cli``.
"""

__version__ = "0.1.0"
