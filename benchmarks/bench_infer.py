"""End-to-end inference on a large synthetic CT: medimg's Predictor vs MONAI's tutorial pipeline.

Both read the same NIfTI CT (int16, 0.7 x 0.7 x 1.0 mm), run the same MONAI
preprocessing (orientation, 2 mm spacing, CT window), the same network (the quickstart
UNet, fixed random weights), put the answer back on the CT's own grid and write the same
``mask.nii.gz``; only the inference and resampling code differs:

* baseline "MONAI sliding_window_inference": defaults (``sw_batch_size=1``) with the
  workflow's overlap and blending, softmax, then MONAI's ``SpatialResample`` of the
  probabilities back to the source affine and shape (what ``Invertd`` does), argmax;
* medimg: ``Predictor`` with the sliding-window batch chosen by ``medimg.data.planner``
  and ``medimg.inference.resample.resample_labels`` (separable trilinear resampling,
  slab by slab, straight to the label map with a per-channel argmax);
* variant "medimg+onnxruntime": the same Predictor on the network exported to ONNX
  Runtime (``medimg.inference.onnx_export``; export time and its check reported, not
  counted: it is done once per model).

Checks reported with the timings: max abs difference of the class probabilities on the
network grid, and the fraction of voxels where the two final masks differ. The
512x512x300 volume of issue 9 is in the default run (with 256x256x120); ``--quick`` uses 160x160x80.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

NAME = "infer"
SPACING = (0.7, 0.7, 1.0)


def make_ct(path: Path, shape: tuple[int, int, int]) -> Path:
    """Write an axial CT-like phantom (body, two organs, noise) as uncompressed int16 NIfTI."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    x, y, z = (np.linspace(-1, 1, n, dtype=np.float32) for n in shape)
    x, y, z = x[:, None, None], y[None, :, None], z[None, None, :]
    data = np.full(shape, -1000, np.int16)
    data[(x / 0.8) ** 2 + (y / 0.6) ** 2 + 0 * z <= 1] = 40
    data[((x + 0.3) / 0.25) ** 2 + (y / 0.2) ** 2 + (z / 0.5) ** 2 <= 1] = 120
    data[((x - 0.35) / 0.12) ** 2 + ((y + 0.1) / 0.12) ** 2 + ((z + 0.2) / 0.3) ** 2 <= 1] = 220
    data += rng.integers(-15, 16, size=shape[:2], dtype=np.int16)[:, :, None]
    affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])  # axial CT, LPS-stored, in RAS
    affine[:3, 3] = [SPACING[0] * shape[0] / 2, SPACING[1] * shape[1] / 2, -SPACING[2] * shape[2] / 2]
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def _net(wf: Any) -> Any:
    import torch

    from medimg.models.networks import build_model

    torch.manual_seed(0)
    return build_model(wf).eval()


def baseline_pipeline(net: Any, wf: Any, image: Path, out: Path) -> tuple[Any, np.ndarray, dict[str, float]]:
    """MONAI tutorial style: preprocess, ``sliding_window_inference`` with defaults, resample back, write."""
    import torch
    from monai.inferers import sliding_window_inference
    from monai.transforms import SpatialResample

    from medimg.data.transforms import eval_transforms
    from medimg.io.nifti import save_nifti
    from medimg.io.volume import Volume

    t0 = time.perf_counter()
    img = eval_transforms(wf, with_label=False)({"image": str(image)})["image"]
    roi = wf.inference.roi_size or wf.augmentation.patch_size
    t1 = time.perf_counter()
    with torch.no_grad():
        logits = sliding_window_inference(
            img.unsqueeze(0), roi, 1, net, overlap=wf.inference.overlap, mode=wf.inference.blend
        )
    probs = torch.softmax(logits.as_tensor().float(), 1)[0]
    t2 = time.perf_counter()
    meta_probs = img.clone()
    meta_probs.set_array(probs)
    src_affine = torch.as_tensor(np.asarray(img.meta["original_affine"], np.float64))
    src_shape = tuple(int(s) for s in np.asarray(img.meta["spatial_shape"]).ravel()[:3])
    back = SpatialResample(mode="bilinear", padding_mode="zeros")(
        meta_probs, dst_affine=src_affine, spatial_size=src_shape
    )
    mask = back.as_tensor().argmax(0).to(torch.uint8).numpy()
    t3 = time.perf_counter()
    save_nifti(Volume(mask, src_affine.numpy()), out, dtype=np.uint8)
    return probs, mask, _stages(t0, t1, t2, t3, time.perf_counter())


def _stages(t0: float, t1: float, t2: float, t3: float, t4: float) -> dict[str, float]:
    return {"read_preprocess_s": t1 - t0, "network_s": t2 - t1, "resample_s": t3 - t2, "write_s": t4 - t3}


def medimg_pipeline(net: Any, wf: Any, image: Path, out: Path) -> tuple[Any, np.ndarray, dict[str, float]]:
    """medimg: ``Predictor`` (preprocess, batched sliding window, separable resample to labels), write."""
    from medimg.inference.predictor import Predictor
    from medimg.io.nifti import save_nifti
    from medimg.io.volume import Volume

    t0 = time.perf_counter()
    pred = Predictor(net, wf, device="cpu")
    item = pred.preprocess(str(image))
    t1 = time.perf_counter()
    result = pred.predict_item(item)
    t3 = time.perf_counter()
    save_nifti(Volume(result.mask, result.source_affine), out, dtype=np.uint8)
    t2 = t1 + result.timings["network_s"]
    return pred, result.mask, _stages(t0, t1, t2, t3, time.perf_counter())


def _case(root: Path, shape: tuple[int, int, int], repeat: int, variants: bool) -> list[dict[str, Any]]:
    """Time the pipelines on one CT size; one row for medimg, one for its ONNX Runtime variant."""
    import time

    import torch

    from benchmarks.bench_train import _workflow
    from benchmarks.common import interleaved, row
    from medimg.data.planner import plan_inference
    from medimg.inference.onnx_export import OnnxNetwork, export_onnx

    wf = _workflow(root / "unused.csv")
    image = make_ct(root / f"ct_{shape[0]}.nii", shape)
    net = _net(wf)
    roi = tuple(wf.augmentation.patch_size)
    fast = wf.model_copy(deep=True)
    pre_shape = tuple(int(round(n * s / 2.0)) for n, s in zip(shape, SPACING, strict=True))
    plan = plan_inference(
        pre_shape, roi, net, out_channels=len(wf.data.labels), device="cpu", source_shape=shape
    )
    fast.inference.sw_batch_size = plan.sw_batch_size
    fns = {
        "baseline": lambda: baseline_pipeline(net, wf, image, root / "base.nii.gz"),
        "medimg": lambda: medimg_pipeline(net, fast, image, root / "medimg.nii.gz"),
    }
    export: dict[str, float] = {}
    if variants:
        t0 = time.perf_counter()
        onnx_path, export["onnx_export_max_abs_diff"] = export_onnx(net, root / "model.onnx", roi)
        export["onnx_export_s"] = time.perf_counter() - t0
        onnx_net = OnnxNetwork(onnx_path)
        with torch.no_grad():
            onnx_net(torch.zeros(1, 1, *roi))  # warm-up: session set-up is not part of the timings
        fns["medimg+onnxruntime"] = lambda: medimg_pipeline(onnx_net, fast, image, root / "medimg_ort.nii.gz")
    with torch.no_grad():
        net(torch.zeros(1, 1, *roi))
    res = interleaved(fns, repeat)
    base_probs, base_mask, base_stages = res["baseline"]["out"]
    size = "x".join(map(str, shape))
    rows = []
    for name in [k for k in res if k != "baseline"]:
        predictor, mask, timings = res[name]["out"]
        item = predictor.preprocess(str(image))
        with torch.no_grad():
            ours = predictor.probabilities(item["image"].as_tensor().unsqueeze(0))[0]
        label = "medimg" if name == "medimg" else name
        rows.append(
            row(
                NAME,
                f"end to end ({label}): {size} CT, read, preprocess, sliding window, resample back, write",
                "s",
                res[name]["median_s"],
                "MONAI sliding_window_inference defaults + SpatialResample back",
                res["baseline"]["median_s"],
                goal=2.0 if name == "medimg" else None,
                peak_rss_mib_medimg=res[name]["peak_mib"],
                peak_rss_mib_baseline=res["baseline"]["peak_mib"],
                repeats=repeat,
                max_abs_diff_probs=float((ours - base_probs).abs().max()),
                mask_voxels_differing=float((mask != base_mask).mean()),
                sw_batch_size=plan.sw_batch_size,
                plan=plan.explain(),
                torch_threads=torch.get_num_threads(),
                **{f"medimg_{k}": v for k, v in timings.items()},
                **{f"baseline_{k}": v for k, v in base_stages.items()},
                **(export if name != "medimg" else {}),
            )
        )
    return rows


def run(
    quick: bool = False, shape: tuple[int, int, int] | None = None, repeat: int | None = None
) -> list[dict]:
    """Measure; return result rows (see ``benchmarks.common.row``).

    Default: 256x256x120 three times (median) and the 512x512x300 CT once per pipeline,
    each with the ONNX Runtime variant; ``quick``: 160x160x80 once, without it.
    """
    with tempfile.TemporaryDirectory(prefix="bench_infer_") as tmp:
        root = Path(tmp)
        if shape is not None:
            return _case(root, shape, repeat or 1, variants=False)
        if quick:
            return _case(root, (160, 160, 80), 1, variants=False)
        return _case(root, (256, 256, 120), repeat or 3, variants=True) + _case(
            root, (512, 512, 300), 1, variants=True
        )


if __name__ == "__main__":
    import json
    import sys

    size = tuple(int(s) for s in sys.argv[1].split("x")) if len(sys.argv) > 1 else None
    print(json.dumps(run(quick=size is None, shape=size), indent=2, default=str))  # type: ignore[arg-type]
