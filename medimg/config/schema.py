"""The study workflow schema: every key a workflow YAML may hold, typed and strict.

Unknown keys, wrong types and impossible values are errors (see
:mod:`medimg.config.load` for how they are reported). Nothing here can run code:
networks, losses and transforms are chosen by name from fixed lists.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medimg.config.duration import parse_duration
from medimg.config.search import TuneSpace
from medimg.config.weights import FinetuneSpec, PretrainedSpec

Triple = tuple[float, float, float]
IntTriple = tuple[int, int, int]


class Strict(BaseModel):
    """Base of every section: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticData(Strict):
    """Generate a synthetic study when the manifest does not exist yet (quickstarts, tests)."""

    cases: int = Field(24, ge=4, le=10000, description="number of cases to generate")
    seed: int = Field(0, description="generator seed; the same seed gives the same files")
    shape: IntTriple = Field((64, 64, 40), description="voxels per case (i, j, k)")
    spacing: Triple = Field((1.6, 1.6, 2.5), description="voxel size in mm (anisotropic)")
    oblique_deg: float = Field(
        12.0, ge=0, le=45, description="rotation of the grid away from the scanner axes"
    )


class SyntheticCasesConfig(Strict):
    """Synthetic cases of one class, sampled from a trained ``task: synthesis`` generator, added to training.

    They join the **training split only**; validation and test stay real. The resolved workflow
    records the generator's MLflow run and weights sha256 (docs/generative.md).
    """

    generator: str = Field(
        ...,
        min_length=1,
        description="the generator: a `task: synthesis` model folder, or the MLflow run id of its study "
        "(read from tracking.uri)",
    )
    class_index: int = Field(..., ge=0, description="class of the synthetic cases (0..data.num_classes-1)")
    count: int = Field(
        ..., ge=1, le=100000, description="number of synthetic cases added to the training split"
    )
    seed: int | None = Field(None, description="sampling seed (None: the workflow's seed)")
    cache_dir: str | None = Field(
        None,
        description="where sampled cases are kept and reused, per generator sha256, class, seed and count "
        "(default: $MEDIMG_CACHE/synthetic, ~/.cache/medimg/synthetic)",
    )
    generator_run_id: str | None = Field(
        None,
        description="filled in by the run: the generator's MLflow run id (a value given here is checked)",
    )
    generator_sha256: str | None = Field(
        None,
        description="filled in by the run: sha256 of the generator's model.safetensors (a value given here "
        "pins it: another generator is refused)",
    )


class SplitConfig(Strict):
    """Patient-level split: a patient never appears in two splits."""

    val_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    seed: int = 0
    folds: int | None = Field(None, ge=2, description="k for k-fold cross-validation (None: one split)")
    fold: int = Field(0, ge=0, description="which fold is the validation fold when folds is set")
    use_manifest_split: bool = Field(True, description="keep a 'split' column of the manifest when present")

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must be < 1 (some cases must remain for training)")
        if self.folds is not None and self.fold >= self.folds:
            raise ValueError(f"fold must be < folds ({self.folds})")
        return self


class DataConfig(Strict):
    """Where the cases are: a CSV manifest or a Decathlon/nnU-Net dataset.json."""

    manifest: str = Field(
        ..., description="CSV manifest, or a dataset.json (Medical Segmentation Decathlon layout)"
    )
    root: str | None = Field(
        None, description="base folder for relative paths in the manifest (default: its folder)"
    )
    image_column: str = Field(
        "image", description="manifest column with the image path (NIfTI file or DICOM folder)"
    )
    label_column: str = Field(
        "label", description="manifest column with the label: a mask path, or a class index"
    )
    patient_column: str = Field(
        "patient_key", description="manifest column with the pseudonymous patient key"
    )
    synthetic: SyntheticData | None = Field(
        None, description="generate this synthetic study if the manifest is missing"
    )
    synthetic_cases: SyntheticCasesConfig | None = Field(
        None,
        description="classification: add cases sampled from a `task: synthesis` generator to the training split",
    )
    split: SplitConfig = SplitConfig()
    sampler: Literal["shuffle", "balanced"] = Field(
        "shuffle",
        description="training batches: shuffle (every case once per epoch); balanced (classification): an "
        "epoch draws as many cases with replacement, each class equally often (probability 1 / class count)",
    )
    labels: dict[int, str] = Field(
        default_factory=dict, description="segmentation label values and names (0 = background)"
    )
    num_classes: int = Field(2, ge=2, description="classes of a classification task")
    channels: int = Field(
        1,
        ge=1,
        le=64,
        description="image channels the network reads: 1 for 3D images; N to read 4D images "
        "(multi-echo, multi-contrast, a short time series) with exactly N volumes as N channels",
    )
    fingerprint: str | None = Field(
        None,
        description="dataset fingerprint JSON written by `medimg plan`: logged with the run (artifact "
        "data/, tag medimg.fingerprint_sha256)",
    )
    check_geometry: bool = Field(True, description="refuse a label whose shape/affine differs from its image")
    nonfinite: Literal["refuse", "zero"] = Field(
        "refuse",
        description="NaN/inf voxels in an image: refuse the file (naming it), or replace them with 0",
    )
    nifti_affine: Literal["refuse", "sform", "qform"] = Field(
        "refuse",
        description="a NIfTI whose qform and sform disagree: refuse it, or trust its sform/qform "
        "(the choice is recorded in the case's QA flags)",
    )


class IntensityConfig(Strict):
    mode: Literal["zscore", "ct_window", "clip_zscore", "minmax", "none"] = "zscore"
    window: tuple[float, float] = Field(
        (-1000.0, 1000.0), description="HU range for ct_window; clip range for clip_zscore"
    )
    nonzero: bool = Field(False, description="z-score over non-zero voxels only (brain MRI)")
    stats: tuple[float, float] | None = Field(
        None,
        description="clip_zscore: (mean, std) of the dataset's foreground intensities (nnU-Net's CT "
        "normalisation); None: each case's own mean and std after clipping",
    )


class CacheConfig(Strict):
    mode: Literal["auto", "memory", "disk", "none"] = Field(
        "auto",
        description=(
            "memory (RAM), disk (one file per case) or none; auto: the planner picks the first that "
            "fits (half the free RAM, then the free disk) and the run logs why"
        ),
    )
    dir: str | None = Field(None, description="disk cache folder (default: <outputs.dir>/cache)")
    num_workers: int = Field(
        0, ge=0, description="threads that fill the memory cache; 0: one below 4 cores, else one per core"
    )


class PreprocessingConfig(Strict):
    """Deterministic steps, computed once and cached."""

    orientation: Literal["RAS", "LPS"] = "RAS"
    spacing: Triple | None = Field(
        (2.0, 2.0, 2.0), description="target voxel size in mm (None keeps the source)"
    )
    intensity: IntensityConfig = IntensityConfig()
    crop_foreground: bool = Field(False, description="crop to the image's non-background bounding box")
    spatial_size: IntTriple | None = Field(
        None, description="resize/pad every image to this size (classification)"
    )
    cache: CacheConfig = CacheConfig()
    auto: bool = Field(
        False,
        description="plan orientation, spacing, intensity and spatial_size from the data's fingerprint and "
        "the machine at run time, as `medimg plan` does (`preprocessing: auto` is short for this); cache "
        "stays as given; the run records the planned values",
    )

    @model_validator(mode="after")
    def _check_auto(self) -> PreprocessingConfig:
        planned = {"orientation", "spacing", "intensity", "crop_foreground", "spatial_size"}
        given = sorted(planned & self.model_fields_set)
        if self.auto and given:
            raise ValueError(
                f"preprocessing.auto plans {', '.join(given)}: expected auto or these keys, not both"
            )
        return self


class SpatialAugmentation(Strict):
    prob: float = Field(0.0, ge=0, le=1)
    rotate_deg: float = Field(10.0, ge=0, le=180)
    scale: float = Field(0.1, ge=0, le=1)


class IntensityAugmentation(Strict):
    prob: float = Field(0.5, ge=0, le=1)
    shift: float = Field(0.1, ge=0)
    scale: float = Field(0.1, ge=0)
    noise_std: float = Field(0.0, ge=0)


class AugmentationConfig(Strict):
    """Random steps, applied every epoch after the cache."""

    patch_size: IntTriple | None = Field((48, 48, 32), description="training patch (segmentation)")
    samples_per_volume: int = Field(2, ge=1, le=64)
    pos_fraction: float = Field(0.67, ge=0, le=1, description="share of patches centred on foreground")
    flip_prob: float = Field(0.5, ge=0, le=1)
    spatial: SpatialAugmentation = SpatialAugmentation()
    intensity: IntensityAugmentation = IntensityAugmentation()


class ModelConfig(Strict):
    name: str = Field(
        "unet",
        description="network name; see `medimg weights networks`; auto (`model: auto` is short for it): the "
        "network `medimg plan` chooses for the data and the machine, planned at run time and recorded",
    )
    params: dict[str, object] = Field(default_factory=dict, description="network keyword arguments")
    pretrained: PretrainedSpec | None = Field(
        None, description="pretrained weight source (see docs/weights.md)"
    )

    @model_validator(mode="after")
    def _check_auto(self) -> ModelConfig:
        if self.name == "auto" and (self.params or self.pretrained is not None):
            raise ValueError(
                "model: auto plans the network and its params from the data at run time: expected no "
                "model.params or model.pretrained with it"
            )
        return self


class OptimConfig(Strict):
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(1e-5, ge=0)
    batch_size: int = Field(2, ge=1, le=1024)
    scheduler: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    loss: Literal["dice_ce", "dice", "ce"] = Field(
        "dice_ce", description="segmentation loss (classification uses ce)"
    )
    class_weights: Literal["auto", "none"] | list[float] = Field(
        "none",
        description="classification: cross-entropy weight per class; auto: n / (classes x count) from the "
        "training split's class counts (resolved at run time, the resolved workflow records the list); "
        "none: unweighted",
    )

    @field_validator("class_weights")
    @classmethod
    def _check_class_weights(cls, value: str | list[float]) -> str | list[float]:
        if isinstance(value, list) and (len(value) < 2 or not all(0 < w < float("inf") for w in value)):
            raise ValueError(f"expected auto, none or one positive finite weight per class, got {value}")
        return value


class TrainerConfig(Strict):
    max_epochs: int = Field(20, ge=1, description="epochs to train (unless max_time is set)")
    max_time: str | None = Field(
        None,
        description="wall-clock training budget, e.g. 90s, 20m, 8h, 1d: training stops at it and the "
        "learning-rate schedule and validation cadence are fitted to it (max_epochs is then not used)",
    )
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | Literal["auto"] = "auto"
    strategy: Literal["auto", "ddp", "ddp_spawn"] = "auto"
    num_nodes: int = Field(1, ge=1)
    precision: Literal["auto", "32", "bf16-mixed", "16-mixed"] = Field(
        "auto", description="auto: bf16-mixed on a GPU that supports it, else 32"
    )
    val_every_n_epochs: int = Field(1, ge=1)
    num_workers: int = Field(0, ge=0)
    deterministic: bool = False
    limit_train_batches: int | float | None = None
    channels_last: bool | Literal["auto"] = Field(
        "auto",
        description=(
            "channels_last_3d memory format for network and batches: faster 3D convolutions on CPU "
            "(docs/benchmarks.md); 'auto' turns it on when training on the CPU"
        ),
    )
    gradient_clip: float | None = Field(None, gt=0)

    @field_validator("max_time")
    @classmethod
    def _check_max_time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)  # a ValueError names the expected form
        return value


class InferenceConfig(Strict):
    roi_size: IntTriple | None = Field(
        None, description="sliding-window size (default: augmentation.patch_size)"
    )
    overlap: float = Field(0.25, ge=0, lt=1)
    sw_batch_size: int | Literal["auto"] = Field(
        "auto",
        description="windows per network call; auto: the planner sizes it from the free memory of the device",
    )
    blend: Literal["gaussian", "constant"] = "gaussian"
    tta_flips: bool = Field(False, description="average predictions over axis flips")


class TrackingConfig(Strict):
    uri: str = Field("sqlite:///runs/mlflow.db", description="MLflow tracking URI (SQLite file by default)")
    experiment: str = "medimg"
    run_name: str | None = None
    log_checkpoint: bool = True
    register_model: str | None = Field(
        None, description="register the trained model (MLflow pyfunc) under this name"
    )
    model_alias: str = Field("candidate", description="alias set on the registered model version")


class OutputsConfig(Strict):
    dir: str = Field("runs/study", description="folder for checkpoints, predictions and reports")


class Workflow(Strict):
    """A study protocol: data, task, preprocessing, augmentation, model, optimisation, trainer, tracking."""

    name: str = Field(
        "study", pattern=r"^[A-Za-z0-9_.-]+$", description="study name (MLflow run name, folders)"
    )
    task: Literal["segmentation", "classification"] = Field(..., description="what the network learns")
    seed: int = Field(0, description="seed of weights init, sampling and augmentation")
    data: DataConfig
    preprocessing: PreprocessingConfig = PreprocessingConfig()
    augmentation: AugmentationConfig = AugmentationConfig()
    model: ModelConfig = ModelConfig()
    finetune: FinetuneSpec = FinetuneSpec()
    optim: OptimConfig = OptimConfig()
    trainer: TrainerConfig = TrainerConfig()
    inference: InferenceConfig = InferenceConfig()
    tracking: TrackingConfig = TrackingConfig()
    outputs: OutputsConfig = OutputsConfig()
    tune: TuneSpace | None = Field(
        None, description="search space of `medimg tune` (null: the default space)"
    )

    @model_validator(mode="before")
    @classmethod
    def _auto_shorthand(cls, data: object) -> object:
        """``model: auto`` and ``preprocessing: auto``: planned at run time (medimg.training.stages.plan_auto)."""
        if isinstance(data, dict):
            data = dict(data)
            if data.get("model") == "auto":
                data["model"] = {"name": "auto"}
            if data.get("preprocessing") == "auto":
                data["preprocessing"] = {"auto": True}
        return data

    @model_validator(mode="after")
    def _check(self) -> Workflow:
        if self.task == "segmentation" and not self.data.labels:
            raise ValueError("data.labels is required for segmentation (e.g. {0: background, 1: organ})")
        if self.task == "segmentation" and 0 not in self.data.labels:
            raise ValueError("data.labels must include 0 (background)")
        if self.data.sampler == "balanced" and self.task != "classification":
            raise ValueError(
                f"data.sampler: balanced is for classification, not {self.task} (expected shuffle)"
            )
        weights = self.optim.class_weights
        if weights != "none" and self.task != "classification":
            raise ValueError(f"optim.class_weights is for classification, not {self.task} (expected none)")
        if isinstance(weights, list) and len(weights) != self.data.num_classes:
            raise ValueError(
                f"optim.class_weights has {len(weights)} weights, expected one per class "
                f"(data.num_classes: {self.data.num_classes})"
            )
        extra = self.data.synthetic_cases
        if extra is not None and self.task != "classification":
            raise ValueError(
                f"data.synthetic_cases applies to task classification only (task is {self.task!r})"
            )
        if extra is not None and extra.class_index >= self.data.num_classes:
            raise ValueError(
                f"data.synthetic_cases.class_index {extra.class_index} is out of range: expected "
                f"0..{self.data.num_classes - 1} (data.num_classes {self.data.num_classes})"
            )
        return self
