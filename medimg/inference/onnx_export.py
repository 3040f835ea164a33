"""CPU inference through ONNX Runtime, with a numerical equivalence check against torch.

``export_onnx`` writes the network (dynamic batch and spatial size) atomically;
``OnnxNetwork`` is a drop-in callable for ``sliding_window_inference`` and ``Predictor``
(torch tensor in, torch tensor out); ``check_equivalence`` runs both on the same input
and reports the max abs difference, which ``export_onnx`` refuses to exceed.

Example:
    >>> path, diff = export_onnx(net, "model.onnx", roi_size=(48, 48, 48))  # doctest: +SKIP
    >>> pred = Predictor(OnnxNetwork(path), workflow, device="cpu")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medimg.errors import WeightsError
from medimg.io.atomic import atomic_write


class OnnxNetwork(torch.nn.Module):
    """An ONNX Runtime session behind the ``nn.Module`` call interface (CPU, float32).

    Example:
        >>> onnx_net = OnnxNetwork("model.onnx", threads=2)  # doctest: +SKIP
        >>> onnx_net(torch.zeros(1, 1, 48, 48, 48)).shape  # doctest: +SKIP
        torch.Size([1, 3, 48, 48, 48])
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        from medimg.extras import require

        ort = require("onnxruntime", "running an ONNX model")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise WeightsError(f"{path}: not a loadable ONNX model ({exc})") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.path = Path(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().float().cpu().numpy()
        (out,) = self.session.run(None, {self.input_name: np.ascontiguousarray(arr)})
        return torch.from_numpy(out).to(x.device)


def check_equivalence(net: torch.nn.Module, onnx_net: OnnxNetwork, x: torch.Tensor) -> float:
    """Max abs difference between the torch network and its ONNX export on input ``x``.

    Example:
        >>> check_equivalence(net, OnnxNetwork("model.onnx"), torch.randn(2, 1, 48, 48, 48))  # doctest: +SKIP
        2.1e-06
    """
    net.eval()
    with torch.no_grad():
        ref = net(x).float()
    return float((onnx_net(x) - ref).abs().max())


def export_onnx(
    net: torch.nn.Module,
    path: str | Path,
    roi_size: tuple[int, int, int],
    in_channels: int = 1,
    atol: float = 1e-4,
    opset: int = 17,
    seed: int = 0,
) -> tuple[Path, float]:
    """Export ``net`` to ONNX (batch and spatial axes dynamic) and check it against torch.

    Args:
        net: the network (moved to CPU, eval mode).
        path: the ``.onnx`` file to write (atomically: a failed export leaves no file).
        roi_size: window size used for the export trace and the check.
        in_channels: input channels.
        atol: largest max abs difference accepted on a random input batch of two windows.
        opset: ONNX opset version.
        seed: seed of the random check input.

    Returns:
        The written path and the measured max abs difference.

    Raises:
        WeightsError: when the exported model differs from torch by more than ``atol``.

    Example:
        >>> path, diff = export_onnx(net, "model.onnx", (48, 48, 48))  # doctest: +SKIP
        >>> diff < 1e-4  # doctest: +SKIP
        True
    """
    from medimg.extras import require

    require("onnx", "exporting a model to ONNX")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.cpu().eval()
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn(1, in_channels, *roi_size, generator=gen)
    axes = {0: "batch", 2: "x", 3: "y", 4: "z"}
    with atomic_write(path) as tmp, torch.no_grad():
        torch.onnx.export(
            net,
            (example,),
            str(tmp),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": axes, "logits": axes},
            opset_version=opset,
            dynamo=False,
        )
        check = torch.randn(2, in_channels, *roi_size, generator=gen)
        diff = check_equivalence(net, OnnxNetwork(tmp), check)
        if not diff <= atol:  # the temp file is removed by atomic_write
            raise WeightsError(
                f"{path}: ONNX export differs from torch by {diff:.3g} (max abs) > atol {atol:g}"
            )
    return path, diff
