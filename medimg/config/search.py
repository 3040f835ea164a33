"""The search space of ``medimg tune`` (the workflow's optional ``tune`` section).

Only pydantic is imported here, so validating a workflow never imports Optuna or torch.
Each dimension is optional; a dimension left out (``null``) is not searched and keeps the
workflow's value. A workflow without a ``tune`` section is searched over the default space
(:class:`TuneSpace` with its defaults).

- ``lr``: ``optim.lr``, log-uniform between the two bounds.
- ``patch_size``: ``augmentation.patch_size`` (and the sliding window), one of the listed patches
  (default: the workflow's own patch only, i.e. not searched).
- ``depth``: the number of levels of a network with ``channels``/``strides`` (UNet-like): channels
  double per level from the first, every stride is 2 (default: the workflow's depth ±1, at least 2).
- ``augmentation_strength``: one number ``s`` in the bounds scaling the random augmentation
  (spatial prob ``0.5 s``, rotation ``30 s`` degrees, scale ``0.3 s``; intensity prob ``s``,
  shift and scale ``0.2 s``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

IntTriple = tuple[int, int, int]


class TuneSpace(BaseModel):
    """What ``medimg tune`` may change, and within which bounds."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    lr: tuple[float, float] | None = Field(
        (1e-4, 1e-2), description="optim.lr range [low, high], searched log-uniformly (null: not searched)"
    )
    patch_size: list[IntTriple] | None = Field(
        None, description="augmentation.patch_size choices (null: the workflow's patch only)"
    )
    depth: list[int] | None = Field(
        None,
        description="network levels to try (UNet-like networks with channels/strides); null: the "
        "workflow's depth and one less/more (at least 2)",
    )
    augmentation_strength: tuple[float, float] | None = Field(
        (0.0, 1.0), description="range of the augmentation strength s in [0, 1] (null: not searched)"
    )

    @model_validator(mode="after")
    def _check(self) -> TuneSpace:
        if self.lr is not None and not 0 < self.lr[0] <= self.lr[1] <= 10:
            raise ValueError(f"tune.lr must be [low, high] with 0 < low <= high <= 10, got {list(self.lr)}")
        s = self.augmentation_strength
        if s is not None and not 0 <= s[0] <= s[1] <= 1:
            raise ValueError(f"tune.augmentation_strength must be [low, high] within [0, 1], got {list(s)}")
        if self.depth is not None and (not self.depth or min(self.depth) < 2 or max(self.depth) > 7):
            raise ValueError(f"tune.depth must list levels between 2 and 7, got {self.depth}")
        if self.patch_size is not None and (not self.patch_size or min(min(p) for p in self.patch_size) < 4):
            raise ValueError(
                f"tune.patch_size must list patches of at least 4 voxels a side, got {self.patch_size}"
            )
        return self
