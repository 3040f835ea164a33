"""Interpretability: saliency maps, sanity checks and self-contained HTML reports.

Example:
    >>> from medimg.explain import compute_saliency
    >>> m = compute_saliency(model, x, "gradcam", target_class=1)  # doctest: +SKIP
"""

from medimg.explain.geometry import map_to_source_grid, save_map_in_source_geometry
from medimg.explain.maps import SaliencyMap, available_methods, compute_saliency
from medimg.explain.runner import CohortResult, ExplainCase, explain_cohort

__all__ = [
    "CohortResult",
    "ExplainCase",
    "SaliencyMap",
    "available_methods",
    "compute_saliency",
    "explain_cohort",
    "map_to_source_grid",
    "save_map_in_source_geometry",
]
