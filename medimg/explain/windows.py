"""Explaining a segmentation network window by window, with the geometry ``medimg predict`` uses.

A segmentation network only accepts inputs whose sides its downsampling can divide; prediction
never feeds it the whole volume but windows (MONAI's ``sliding_window_inference``) of the
workflow's ``inference.roi_size`` (else the training ``augmentation.patch_size``), with
``inference.overlap``, ``inference.blend`` and the sliding-window batch chosen by the same
planner (:func:`medimg.data.planner.plan_sw_batch`) as
:class:`medimg.inference.predictor.Predictor`. A volume smaller than a window is padded with
zeros and cropped back, as in prediction.

* Forward-only methods (``uncertainty``) and the sanity checks see :class:`WindowedNetwork`: the
  network stitched over the windows, i.e. the logits prediction blends.
* Gradient methods (``seg-gradcam``) compute their map inside each window, with gradients that
  stay in that window, for the target restricted to that window (the label's logits summed over
  the window's part of the stitched prediction); the window maps are blended exactly like the
  logits. A window holding no target voxel contributes a zero map.

Memory is bounded by one window: maps are computed one window at a time; only the stitched map
(one channel) covers the whole volume.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from medimg.config.schema import Workflow
from medimg.data.planner import sliding_window_plan
from medimg.errors import ConfigError
from medimg.explain.maps import get_method
from medimg.explain.saliency import SaliencyMap
from medimg.tasks import get_task

#: Methods that only run the network forward: they see the stitched network, not single windows.
FORWARD_ONLY = frozenset({"uncertainty"})
#: Without a workflow, the one window is the volume padded to a multiple of this (total stride of
#: every segmentation network in the registry: four or five stride-2 levels).
PAD_MULTIPLE = 32


@dataclass(frozen=True)
class WindowPlan:
    """How a volume is cut into windows: size, overlap, blending and windows per network call."""

    roi: tuple[int, ...]
    overlap: float
    blend: str
    sw_batch: int
    why: str = ""

    def as_params(self) -> dict[str, Any]:
        """The plan as report parameters."""
        return {"roi": list(self.roi), "overlap": self.overlap, "blend": self.blend}


def window_plan(
    workflow: Workflow | None,
    net: nn.Module,
    shape: tuple[int, ...],
    device: str = "cpu",
    source_shape: tuple[int, ...] | None = None,
) -> WindowPlan:
    """The windows ``medimg predict`` uses for a volume of ``shape`` (the preprocessed grid).

    Without a workflow (a bare network), one window: the volume padded with zeros to a multiple
    of :data:`PAD_MULTIPLE` per side, cropped back afterwards.

    Example:
        >>> window_plan(None, torch.nn.Identity(), (33, 40, 70)).roi
        (64, 64, 96)
    """
    if workflow is None:
        roi = tuple(-(-int(s) // PAD_MULTIPLE) * PAD_MULTIPLE for s in shape)
        return WindowPlan(roi, 0.0, "constant", 1, f"one window, padded to a multiple of {PAD_MULTIPLE}")
    inf = workflow.inference
    n_labels = len(workflow.data.labels)
    roi, sw, why = sliding_window_plan(
        workflow, net, shape, workflow.data.channels, n_labels, device, source_shape
    )
    return WindowPlan(roi, inf.overlap, inf.blend, sw, why)


def _stitch(x: torch.Tensor, plan: WindowPlan, per_window: Any) -> torch.Tensor:
    return sliding_window_inference(  # type: ignore[return-value]
        x, plan.roi, plan.sw_batch, per_window, overlap=plan.overlap, mode=plan.blend
    )


class WindowedNetwork(nn.Module):
    """A segmentation network applied window by window; ``forward`` gives the stitched logits.

    No gradients flow through it (it is what prediction computes, for the forward-only methods
    and the deletion/insertion curves).

    Example:
        >>> net = WindowedNetwork(torch.nn.Conv3d(1, 2, 1), WindowPlan((8, 8, 8), 0.25, "gaussian", 2))
        >>> tuple(net(torch.zeros(1, 1, 9, 5, 13)).shape)
        (1, 2, 9, 5, 13)
    """

    def __init__(self, net: nn.Module, plan: WindowPlan) -> None:
        super().__init__()
        self.net = net
        self.plan = plan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return _stitch(x, self.plan, self.net)


def target_region(net: nn.Module, x: torch.Tensor, plan: WindowPlan, label: int) -> tuple[np.ndarray, str]:
    """The voxels the stitched prediction assigns to ``label`` (the whole volume when there are none)."""
    logits = WindowedNetwork(net, plan)(x)
    pred = logits[:, 0] > 0 if logits.shape[1] == 1 else logits.argmax(dim=1) == label
    region = pred[0].cpu().numpy()
    if region.any():
        return region, "predicted"
    return np.ones_like(region), "whole volume (nothing predicted)"


def windowed_saliency(
    net: nn.Module, x: torch.Tensor, method: str, plan: WindowPlan, **params: Any
) -> SaliencyMap:
    """The map ``method`` of a segmentation network for ``x``, computed the way prediction runs.

    Args:
        net: segmentation network (``(B, K, *window)`` logits for ``(B, C, *window)`` windows).
        x: the whole preprocessed volume ``(1, C, D, H, W)``; any size.
        method: a segmentation method name (``seg-gradcam``, ``uncertainty``...).
        plan: the windows (:func:`window_plan`).
        **params: passed to the method (``label``, ``region``, ``layer``, ``mode``...).

    Returns:
        A map on ``x``'s grid; ``params`` add the window plan, ``grid_note`` says how it was made.

    Example:
        >>> m = windowed_saliency(unet, x, "seg-gradcam", window_plan(wf, unet, x.shape[2:]), label=1)  # doctest: +SKIP
    """
    fn, task = get_method(method)
    if not get_task(task).dense:
        raise ConfigError(f"method {method!r} is for {task} models; windows are for segmentation networks")
    if x.ndim != 5 or x.shape[0] != 1:
        raise ValueError(f"expected an input of shape (1, C, D, H, W), got {tuple(x.shape)}")
    x = x.detach().float()
    if method in FORWARD_ONLY:
        result = fn(WindowedNetwork(net, plan), x, **params)
        result.params.update(windows=plan.as_params())
        return result
    return _per_window(net, x, method, plan, params)


def _per_window(
    net: nn.Module, x: torch.Tensor, method: str, plan: WindowPlan, params: dict[str, Any]
) -> SaliencyMap:
    from medimg.explain.layers import default_target_layer

    fn, _task = get_method(method)
    params = dict(params)
    label = int(params.get("label", 1))
    region = params.pop("region", None)
    how = "given"
    if region is None:
        region, how = target_region(net, x, plan, label)
    region_t = torch.as_tensor(np.asarray(region, dtype=np.float32), device=x.device)
    if tuple(region_t.shape) != tuple(x.shape[2:]):
        raise ValueError(
            f"region shape {tuple(region_t.shape)} differs from the input grid {tuple(x.shape[2:])}"
        )
    if "layer" in inspect.signature(fn).parameters and params.get("layer") is None:
        probe = torch.zeros((1, x.shape[1], *plan.roi), device=x.device)
        params["layer"] = default_target_layer(net, probe, task="segmentation")
    channels = x.shape[1]
    seen: list[SaliencyMap] = []

    def per_window(batch: torch.Tensor) -> torch.Tensor:
        maps = []
        for window in batch:
            inside = window[channels] > 0.5
            if not bool(inside.any()):
                maps.append(torch.zeros(window.shape[1:], device=batch.device))
                continue
            m = fn(net, window[None, :channels], region=inside.cpu().numpy(), **params)
            seen.append(m)
            maps.append(torch.as_tensor(m.array, device=batch.device))
        return torch.stack(maps)[:, None]

    stitched = _stitch(torch.cat([x, region_t[None, None]], dim=1), plan, per_window)
    first = seen[0] if seen else SaliencyMap(np.zeros(plan.roi, np.float32), method)
    out = SaliencyMap(stitched[0, 0].detach().cpu().numpy(), method, dict(first.params), dict(first.target))
    out.params.update(windows=plan.as_params(), windows_with_target=len(seen))
    out.target["region"] = how
    out.grid_note = (
        f"computed inside each {'x'.join(map(str, plan.roi))} window of the prediction's sliding window "
        f"(overlap {plan.overlap}, {plan.blend} blending; {len(seen)} windows hold the target), "
        "gradients within the window, window maps blended like the logits"
    )
    return out
