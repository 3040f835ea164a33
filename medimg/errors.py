"""Errors a user can cause. Each message names the file or key and what was expected."""

from __future__ import annotations


class MedimgError(Exception):
    """Base class of every error medimg raises on purpose (bad input, bad config)."""


class ConfigError(MedimgError):
    """A workflow or command-line setting is missing, misspelled or impossible."""


class DataError(MedimgError):
    """An image, label or manifest cannot be used; the message names the file."""


class GeometryError(DataError):
    """Two volumes that must share a grid do not (shape, affine or orientation)."""


class WeightsError(MedimgError):
    """Pretrained weights cannot be found, verified or loaded safely."""
