"""medimg: deep learning on medical images, from DICOM folders to reports.

Layers (see ``docs/architecture.md``): ``io`` → ``data`` → ``models`` →
``training`` → ``inference`` / ``evaluation`` / ``explain`` → ``cli``.
The version has one source, the package metadata (``pyproject.toml``).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medimg")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"
