"""One trained model, loaded once, applied to any number of cases.

``Predictor`` runs the workflow's deterministic preprocessing, the network (sliding
window with Gaussian blending for segmentation, optional flip TTA, autocast on GPU)
and puts the answer back on the input's own grid: same shape, same affine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from medimg.config.schema import Workflow
from medimg.data.planner import sliding_window_plan
from medimg.data.transforms import eval_transforms, preprocess_image
from medimg.errors import DataError
from medimg.inference.postprocess import Postprocessing, voxel_volume
from medimg.inference.resample import resample_labels
from medimg.io.volume import Volume
from medimg.tasks import get_task

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """A case's answer on its source grid (segmentation) or its class probabilities."""

    case_key: str
    source_affine: np.ndarray
    source_shape: tuple[int, int, int]
    mask: np.ndarray | None = None  # uint8 labels on the source grid
    probs: np.ndarray | None = None  # class probabilities (classification)
    timings: dict[str, float] = field(default_factory=dict)
    source_codes: dict[str, int] = field(default_factory=dict)  # NIfTI qform/sform codes to keep
    source_qa: list[str] = field(default_factory=list)  # the reader's QA flags (e.g. which NIfTI affine)

    def mask_volume(self) -> Volume:
        """The mask as a Volume on the source grid, keeping the source's NIfTI qform/sform codes.

        Example:
            >>> p = Prediction("c", np.eye(4), (2, 2, 2), mask=np.zeros((2, 2, 2), np.uint8))
            >>> p.mask_volume().shape
            (2, 2, 2)
        """
        if self.mask is None:
            raise DataError(f"case {self.case_key}: the prediction holds no mask (a per-image task)")
        return Volume(self.mask, self.source_affine, meta=dict(self.source_codes))


def check_finite_output(probs: torch.Tensor, case_key: str) -> None:
    """Refuse a network output holding NaN/inf: no mask or probability is made from it.

    Example:
        >>> check_finite_output(torch.zeros(2, 4), "case_1")  # finite: nothing to say
    """
    finite = torch.isfinite(probs)
    if not bool(finite.all()):
        bad = int(finite.numel() - finite.sum())
        raise DataError(
            f"case {case_key}: the network output holds {bad} NaN/inf value(s) of {finite.numel()}; "
            "no result is written (check the image's intensities and the model's weights)"
        )


class Predictor:
    """Apply a trained network to cases, returning results in each input's geometry.

    Example:
        >>> pred = Predictor(net, workflow)  # doctest: +SKIP
        >>> out = pred.predict_path("scan.nii.gz")  # doctest: +SKIP
        >>> out.mask.shape == nib.load("scan.nii.gz").shape  # doctest: +SKIP
        True
    """

    def __init__(
        self,
        net: torch.nn.Module,
        wf: Workflow,
        device: str | torch.device | None = None,
        postprocessing: Postprocessing | None = None,
    ) -> None:
        self.wf = wf
        self.postprocessing = postprocessing  # steps chosen on validation, applied to every mask
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.net = net.to(self.device).eval()
        self.transform = eval_transforms(wf, with_label=False)
        self.plan = ""  # the sliding-window batch chosen for the last case, and why

    def preprocess(self, image_path: str) -> dict[str, Any]:
        """Load and preprocess one image; returns MONAI's dict with a MetaTensor ``image``.

        Raises:
            MedimgError: the image is refused by medimg's reader (the same reason
                ``medimg convert`` gives), not MONAI's "applying transform" wrapper.
        """
        return preprocess_image(self.wf, image_path, self.transform)

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor, source_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Class probabilities (softmax of the network output) for a (1, C, X, Y, Z) tensor.

        With flip TTA configured, the mean of the probabilities over the flips.

        ``source_shape`` (the scan's own grid, where the answer is resampled back to) lets the
        planner budget that resampling when it sizes the sliding-window batch.
        """
        x = x.to(self.device)
        flips: list[tuple[int, ...]] = [()]
        if self.wf.inference.tta_flips:
            flips += [(2,), (3,), (4,)]
        out = None
        amp = self.device.type == "cuda"
        for dims in flips:
            xi = torch.flip(x, dims) if dims else x
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
                y = self._forward(xi, source_shape)
            y = torch.softmax(y.float(), 1)
            y = torch.flip(y, dims) if dims else y
            out = y if out is None else out + y
        assert out is not None
        return out / len(flips)

    def _forward(self, x: torch.Tensor, source_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        if not get_task(self.wf.task).dense:  # one answer per image
            return self.net(x)
        inf = self.wf.inference
        n_labels = len(self.wf.data.labels)
        roi, sw, why = sliding_window_plan(
            self.wf, self.net, x.shape[2:], int(x.shape[1]), n_labels, self.device.type, source_shape
        )
        if why != self.plan:
            log.info("planner: %s", why)
        self.plan = why

        def run(stitch_on: torch.device) -> torch.Tensor:
            return sliding_window_inference(
                x,
                roi,
                sw,
                self.net,
                overlap=inf.overlap,
                mode=inf.blend,
                sw_device=self.device,
                device=stitch_on,
            )

        if self.device.type != "cuda":
            return run(self.device)
        try:
            return run(self.device)
        except torch.cuda.OutOfMemoryError:  # the stitched volume does not fit: stitch on the CPU
            torch.cuda.empty_cache()
            return run(torch.device("cpu"))

    def predict_item(self, item: dict[str, Any], case_key: str = "case") -> Prediction:
        """Predict one preprocessed item (from :meth:`preprocess`)."""
        import time

        img = item["image"]
        meta = img.meta
        src_affine = np.asarray(meta["original_affine"], dtype=np.float64)
        src_shape = tuple(int(s) for s in np.asarray(meta["spatial_shape"]).ravel()[:3])
        t0 = time.perf_counter()
        probs = self.probabilities(img.as_tensor().unsqueeze(0), src_shape)[0]
        t1 = time.perf_counter()
        check_finite_output(probs, case_key)
        pred = Prediction(case_key, src_affine, src_shape)  # type: ignore[arg-type]
        pred.source_codes = {k: int(meta[k]) for k in ("qform_code", "sform_code") if k in meta}
        pred.source_qa = [f for f in str(meta.get("qa", "")).split(";") if f]
        if int(meta.get("nonfinite_zeroed", 0) or 0):  # data.nonfinite: zero replaced some voxels
            pred.source_qa.append(f"nonfinite_zeroed_{int(meta['nonfinite_zeroed'])}")
        if get_task(self.wf.task).dense:  # a mask, back on the source grid
            pre_affine = np.asarray(img.affine, dtype=np.float64)
            pred.mask = resample_labels(probs, pre_affine, src_shape, src_affine)  # type: ignore[arg-type]
            if self.postprocessing is not None:
                pred.mask = self.postprocessing.apply(pred.mask, voxel_volume(src_affine))
        else:
            pred.probs = probs.float().cpu().numpy()
        pred.timings = {"network_s": t1 - t0, "resample_s": time.perf_counter() - t1}
        return pred

    def predict_path(self, image_path: str, case_key: str = "case") -> Prediction:
        """Preprocess and predict the image at ``image_path`` (NIfTI file or DICOM series folder)."""
        return self.predict_item(self.preprocess(image_path), case_key)
