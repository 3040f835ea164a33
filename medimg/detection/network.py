"""The detector: MONAI's 3D RetinaNet on a small ResNet + FPN, anchors from the plan.

MONAI's ``resnet_fpn_feature_extractor`` (and ``BackboneWithFPN`` under it) need torchvision
(``_validate_trainable_layers``, ``IntermediateLayerGetter``), which medimg does not install.
:class:`ResNetFPN` is the small replacement: it runs MONAI's ResNet stem and layers and hands the
returned layers to MONAI's ``FeaturePyramidNetwork`` (torch only). Everything else is MONAI's
``monai.apps.detection`` as is: ``RetinaNet``, ``RetinaNetDetector``,
``AnchorGeneratorWithAnchorShape``, the ``BoxCoder``, the ATSS matcher and the
``HardNegativeSampler`` (the torchvision ``Matcher`` and ``BalancedPositiveNegativeSampler`` are
not used).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from medimg.detection.plan import DetectionPlan


class ResNetFPN(nn.Module):
    """MONAI ResNet layers ``returned_layers`` under a feature pyramid (no torchvision).

    Example:
        >>> fpn = ResNetFPN(block_inplanes=(8, 16, 32, 64), returned_layers=(1, 2), conv1_stride=(2, 2, 2))
        >>> [tuple(v.shape) for v in fpn(torch.zeros(1, 1, 32, 32, 16)).values()]
        [(1, 32, 8, 8, 4), (1, 32, 4, 4, 2), (1, 32, 2, 2, 1)]
    """

    def __init__(
        self,
        block_inplanes: Sequence[int] = (16, 32, 64, 128),
        layers: Sequence[int] = (1, 1, 1, 1),
        returned_layers: Sequence[int] = (1, 2),
        conv1_stride: Sequence[int] = (2, 2, 1),
        conv1_size: Sequence[int] = (3, 3, 3),
        out_channels: int = 32,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
        from monai.networks.nets.resnet import ResNet

        self.backbone = ResNet(
            block="basic",
            layers=list(layers),
            block_inplanes=list(block_inplanes),
            spatial_dims=3,
            n_input_channels=in_channels,
            conv1_t_stride=tuple(conv1_stride),
            conv1_t_size=tuple(conv1_size),
            feed_forward=False,
        )
        self.returned_layers = tuple(int(r) for r in returned_layers)
        self.fpn = FeaturePyramidNetwork(
            spatial_dims=3,
            in_channels_list=[int(block_inplanes[r - 1]) for r in self.returned_layers],
            out_channels=out_channels,
            extra_blocks=LastLevelMaxPool(3),
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b = self.backbone
        x = b.act(b.bn1(b.conv1(x)))
        if not b.no_max_pool:
            x = b.maxpool(x)
        feats: OrderedDict[str, torch.Tensor] = OrderedDict()
        for n in range(1, max(self.returned_layers) + 1):
            x = getattr(b, f"layer{n}")(x)
            if n in self.returned_layers:
                feats[str(len(feats))] = x
        out: dict[str, torch.Tensor] = self.fpn(feats)
        return out


def _atss_detector_class() -> type:
    """RetinaNetDetector whose anchor matching asks only for MONAI's ATSS matcher.

    MONAI's ``compute_anchor_matched_idxs`` first tests ``isinstance(matcher, Matcher)`` with
    torchvision's ``Matcher``, which fails without torchvision even when the ATSS matcher is set.
    This override is that method with the ATSS branch only (same calls, same results).
    """
    from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector

    class AtssRetinaNetDetector(RetinaNetDetector):  # type: ignore[misc]
        def compute_anchor_matched_idxs(
            self,
            anchors: list[torch.Tensor],
            targets: list[dict[str, torch.Tensor]],
            num_anchor_locs_per_level: Sequence[int],
        ) -> list[torch.Tensor]:
            matched = []
            for anchors_per_image, targets_per_image in zip(anchors, targets, strict=True):
                boxes = targets_per_image[self.target_box_key]
                if boxes.numel() == 0:
                    matched.append(
                        torch.full(
                            (anchors_per_image.size(0),),
                            -1,
                            dtype=torch.int64,
                            device=anchors_per_image.device,
                        )
                    )
                    continue
                _, idxs = self.proposal_matcher(
                    boxes.to(anchors_per_image.device),
                    anchors_per_image,
                    num_anchor_locs_per_level,
                    self.num_anchors_per_loc,
                )
                matched.append(idxs)
            return matched

    return AtssRetinaNetDetector


def size_divisible(plan: DetectionPlan) -> tuple[int, int, int]:
    """Input sizes the network needs (conv1 stride x max pool x one halving per returned layer)."""
    top = 2 ** max(plan.returned_layers)
    return tuple(int(s) * top for s in plan.conv1_stride)  # type: ignore[return-value]


def build_detector(plan: DetectionPlan, *, debug: bool = False) -> Any:
    """The RetinaNetDetector of ``plan``: network, anchors, ATSS matcher, hard-negative sampler, selector.

    Example:
        >>> det = build_detector(plan)  # doctest: +SKIP
        >>> det.num_anchors_per_loc  # doctest: +SKIP
        3
    """
    from monai.apps.detection.networks.retinanet_network import RetinaNet
    from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape

    feature_extractor = ResNetFPN(
        block_inplanes=plan.block_inplanes,
        returned_layers=plan.returned_layers,
        conv1_stride=plan.conv1_stride,
        out_channels=plan.fpn_channels,
    )
    levels = len(plan.returned_layers) + 1
    anchors = AnchorGeneratorWithAnchorShape(
        feature_map_scales=[2**level for level in range(levels)],
        base_anchor_shapes=[tuple(float(v) for v in s) for s in plan.anchor_shapes],
    )
    network = RetinaNet(
        spatial_dims=3,
        num_classes=1,
        num_anchors=anchors.num_anchors_per_location()[0],
        feature_extractor=feature_extractor,
        size_divisible=size_divisible(plan),
    )
    for head in (network.classification_head, network.regression_head):
        # MONAI's heads stack four conv blocks (conv, GroupNorm, ReLU); the plan keeps the first few
        head.conv = nn.Sequential(*list(head.conv)[: 3 * plan.head_layers])
    detector = _atss_detector_class()(network=network, anchor_generator=anchors, debug=debug)
    detector.set_box_coder_weights(tuple(float(w) for w in plan.box_coder_weights))
    detector.set_atss_matcher(num_candidates=4, center_in_gt=False)
    detector.set_hard_negative_sampler(
        batch_size_per_image=64, positive_fraction=0.3, pool_size=20, min_neg=16
    )
    detector.set_target_keys(box_key="boxes", label_key="labels")
    # the detector keeps overlapping boxes (NMS off); medimg.detection.predict.merge_boxes merges them
    detector.set_box_selector_parameters(
        score_thresh=plan.score_thresh, topk_candidates_per_level=1000, nms_thresh=1.0, detections_per_img=300
    )
    return detector
