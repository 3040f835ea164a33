"""Seeds and deterministic algorithms, with an honest list of what cannot be made deterministic."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

CUDA_CAVEATS = (
    "cuDNN convolution backward and trilinear/bilinear upsampling backward have no deterministic CUDA "
    "kernel for every shape; PyTorch warns when one runs",
    "atomicAdd-based reductions (index_add, scatter_add) on CUDA",
    "bf16/fp16 autocast changes results across GPU models even when deterministic on one",
)


def configure_determinism(seed: int, deterministic: bool, accelerator: str) -> list[str]:
    """Seed Python, NumPy, torch and MONAI; in deterministic mode also pin algorithms.

    Returns the caveats that apply on this device (logged and recorded in MLflow).

    Example:
        >>> configure_determinism(0, deterministic=False, accelerator="cpu")
        []
    """
    import lightning.pytorch as pl
    import torch
    from monai.utils import set_determinism

    pl.seed_everything(seed, workers=True, verbose=False)
    if not deterministic:
        return []
    set_determinism(seed=seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    caveats: list[str] = []
    on_gpu = torch.cuda.is_available() and accelerator not in ("cpu",)
    if on_gpu:
        caveats.extend(CUDA_CAVEATS)
    caveats.append("results are reproducible on the same hardware, thread count and library versions only")
    for c in caveats:
        log.warning("determinism: %s", c)
    return caveats
