"""medimg: deep learning on medical images, from DICOM folders to reports.

Layers, each importing only those before it (see ``docs/architecture.md``): ``io`` / ``config``
→ ``data`` / ``models`` / ``evaluation`` → ``inference`` → ``training`` / ``explain`` → ``cli``.
The version has one source, the package metadata (``pyproject.toml``).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medimg")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"
