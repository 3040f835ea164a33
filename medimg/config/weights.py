"""Typed settings for pretrained weights and fine-tuning (embedded in the workflow schema).

Only pydantic is imported here, so validating a workflow never imports torch.

``model.pretrained`` (:class:`PretrainedSpec`) says where weights come from and how
their keys map onto the network; ``training.finetune`` (:class:`FinetuneSpec`) says
how they are fine-tuned. Unknown keys are errors.

Weight sources (the ``source`` string):

=============================  ==============================================================
``/path/to/file``              local ``.safetensors``, ``.pt``/``.pth`` state dict, Lightning ``.ckpt``
``url:https://…``              download once into ``$MEDIMG_CACHE`` (``sha256`` required)
``bundle:<name or folder>``    MONAI bundle folder, or a bundle name in the bundle cache
``hf:<org>/<repo>/<file>``     a file of a Hugging Face repo already in the local HF cache
``package:<dist>/<name>``      weights shipped by an installed Python package
``runs:/<run_id>/<path>``      an artifact of an earlier (medimg) MLflow run
``preset:<name>``              a registered preset (URL, sha256 and key mapping)
=============================  ==============================================================
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SOURCE_SCHEMES = ("url:", "bundle:", "hf:", "package:", "runs:/", "preset:")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class RenameRule(BaseModel):
    """One regular-expression rename applied to every checkpoint key (``re.sub``).

    Example:
        >>> RenameRule(pattern=r"^encoder\\.", replace="swinViT.").replace
        'swinViT.'
    """

    model_config = ConfigDict(extra="forbid")

    pattern: str = Field(description="Python regular expression matched against each key.")
    replace: str = Field("", description="Replacement (may use \\1 groups).")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from None
        return value


class PretrainedSpec(BaseModel):
    """Where pretrained weights come from and how they are mapped and checked.

    Key mapping runs in this order: pick ``checkpoint_key`` (else auto-detect
    ``state_dict``/``model``/``network``), ``strip_prefix``, ``rename`` rules, ``add_prefix``.

    Example:
        >>> spec = PretrainedSpec(source="weights/encoder.safetensors", strip_prefix="module.")
        >>> spec.strip_prefix, spec.min_encoder_fraction
        (['module.'], 0.9)
    """

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        description="Local path or scheme:reference (url:, bundle:, hf:, package:, runs:/, preset:)."
    )
    sha256: str | None = Field(None, description="Expected SHA-256 of the file (required for url:).")
    checkpoint_key: str | None = Field(
        None,
        description="Key of the state dict inside the checkpoint (dots for nesting); auto-detected when unset.",
    )
    strip_prefix: list[str] = Field(
        default_factory=list, description="Prefixes removed from checkpoint keys."
    )
    add_prefix: str = Field("", description="Prefix added to every checkpoint key after renaming.")
    rename: list[RenameRule] = Field(default_factory=list, description="Regex renames, applied in order.")
    allow_pickle: bool = Field(
        False,
        description="Ask for full pickle loading (runs code from the file!); only takes effect when the "
        "person running medimg also passes --allow-pickle or sets MEDIMG_ALLOW_PICKLE=1. Only for files you trust.",
    )
    min_encoder_fraction: float = Field(
        0.9, ge=0.0, le=1.0, description="Fail unless at least this fraction of encoder tensors was loaded."
    )
    adapt_in_channels: bool = Field(
        False, description="Adapt the first convolution when the checkpoint has another input channel count."
    )
    reinit_head: bool = Field(False, description="Never load the task head (keep it freshly initialised).")
    exclude: list[str] = Field(default_factory=list, description="Regexes of target keys never loaded.")

    @field_validator("strip_prefix", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("exclude")
    @classmethod
    def _exclude_compiles(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"exclude pattern {pattern!r} is not a valid regular expression ({exc})"
                ) from None
        return value

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower()
        if not _SHA256.match(value):
            raise ValueError("sha256 must be 64 hexadecimal characters")
        return value

    @field_validator("source")
    @classmethod
    def _source_form(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("source must not be empty")
        if value.startswith("http://") or value.startswith("https://"):
            raise ValueError("write a download as url:https://... together with its sha256")
        for scheme in SOURCE_SCHEMES:
            if value.startswith(scheme) and len(value) == len(scheme):
                raise ValueError(f"source {value!r} names no reference after {scheme!r}")
        if value.startswith("url:") and not value[4:].startswith(("https://", "http://", "file://")):
            raise ValueError("url: sources must be url:https://..., url:http://... or url:file://...")
        return value

    @model_validator(mode="after")
    def _url_needs_sha(self) -> PretrainedSpec:
        if self.source.startswith("url:") and not self.sha256:
            raise ValueError("a url: source needs its sha256 (the download is verified against it)")
        return self

    @property
    def scheme(self) -> str:
        """The source kind: ``file``, ``url``, ``bundle``, ``hf``, ``package``, ``runs`` or ``preset``.

        Example:
            >>> PretrainedSpec(source="preset:merlin").scheme
            'preset'
        """
        for scheme in SOURCE_SCHEMES:
            if self.source.startswith(scheme):
                return scheme.rstrip(":/")
        return "file"

    @property
    def reference(self) -> str:
        """The source without its scheme (a path, URL, name or run artifact URI)."""
        scheme = self.scheme
        if scheme == "file":
            return self.source
        if scheme == "runs":
            return self.source  # MLflow wants the full runs:/ URI
        return self.source.split(":", 1)[1]


class FinetuneSpec(BaseModel):
    """How pretrained weights are fine-tuned.

    Example:
        >>> FinetuneSpec(freeze_encoder_epochs=2, backbone_lr_mult=0.1).backbone_lr_mult
        0.1
    """

    model_config = ConfigDict(extra="forbid")

    freeze_encoder_epochs: int = Field(
        0, ge=0, description="Epochs with the encoder frozen before unfreezing."
    )
    backbone_lr_mult: float = Field(
        1.0, gt=0.0, le=10.0, description="Encoder learning rate = base learning rate x this multiplier."
    )
    freeze_norm: bool = Field(
        False, description="Keep normalisation layers of the encoder frozen (eval statistics, no grad)."
    )

    @model_validator(mode="before")
    @classmethod
    def _schedule_lives_in_optim(cls, data: object) -> object:
        # Workflows saved with models before the schedule moved to optim carry these keys at
        # their defaults (no schedule): accepted and dropped, so those models still load.
        if not isinstance(data, dict):
            return data
        defaults = {"warmup_epochs": 0, "schedule": "constant", "min_lr_ratio": 0.0}
        moved = sorted(k for k, v in defaults.items() if k in data and data[k] != v)
        if moved:
            raise ValueError(
                f"finetune.{', finetune.'.join(moved)}: the learning-rate schedule is set in "
                "optim.warmup_epochs and optim.scheduler (one schedule for every study)"
            )
        return {k: v for k, v in data.items() if k not in defaults}
