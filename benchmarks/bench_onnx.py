"""CPU network time: ONNX Runtime (``medimg.inference.onnx_export``) vs torch, same sliding window.

The quickstart UNet (fixed random weights) is exported once (time and max abs
difference of the export check reported); then the same MONAI
``sliding_window_inference`` (workflow overlap, Gaussian blending, the same window
batch) runs on a CT-like preprocessed volume with the torch network and with the ONNX
Runtime session, interleaved. The row reports the max abs difference of the logits.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

NAME = "onnx"


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure; return result rows (see ``benchmarks.common.row``)."""
    import time

    import torch
    from monai.inferers import sliding_window_inference

    from benchmarks.bench_infer import _net
    from benchmarks.bench_train import _workflow
    from benchmarks.common import interleaved, row
    from medimg.inference.onnx_export import OnnxNetwork, export_onnx

    shape, repeat = ((64, 64, 64), 1) if quick else ((128, 128, 96), 3)
    with tempfile.TemporaryDirectory(prefix="bench_onnx_") as tmp:
        wf = _workflow(Path(tmp) / "unused.csv")
        net = _net(wf)
        roi = tuple(wf.augmentation.patch_size)
        t0 = time.perf_counter()
        path, export_diff = export_onnx(net, Path(tmp) / "model.onnx", roi)
        export_s = time.perf_counter() - t0
        onnx_net = OnnxNetwork(path)
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(1, 1, *shape, generator=gen)
        sw = wf.inference.sw_batch_size

        def infer(model: Any) -> Any:
            def go() -> Any:
                with torch.no_grad():
                    return sliding_window_inference(
                        x, roi, sw, model, overlap=wf.inference.overlap, mode=wf.inference.blend
                    )

            return go

        infer(net)()  # warm-up: one-off kernel set-up is not part of either figure
        infer(onnx_net)()
        res = interleaved({"baseline": infer(net), "medimg": infer(onnx_net)}, repeat)
        diff = float((res["medimg"]["out"] - res["baseline"]["out"]).abs().max())
    task = f"sliding window over {'x'.join(map(str, shape))}, quickstart UNet, sw_batch_size {sw}, CPU"
    return [
        row(
            NAME,
            f"ONNX Runtime network: {task}",
            "s",
            res["medimg"]["median_s"],
            "torch (same network, fp32)",
            res["baseline"]["median_s"],
            peak_rss_mib_medimg=res["medimg"]["peak_mib"],
            peak_rss_mib_baseline=res["baseline"]["peak_mib"],
            repeats=repeat,
            max_abs_diff_logits=diff,
            export_s=export_s,
            export_check_max_abs_diff=export_diff,
        )
    ]


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=2))
