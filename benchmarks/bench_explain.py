"""Where the saliency methods point, on the shipped classification quickstart (the pointing game).

Trains ``workflows/quickstart_cls.yaml`` exactly as shipped (in a temporary folder), then
generates positive cases the model never saw (``make_case(1000 + i, seed=7,
with_lesion=True)``: another study seed) and, for each method, counts the cases whose map
peaks inside the lesion mask. The named baseline is chance: the fraction of the model
grid's voxels that are lesion (where a peak at a random voxel would land), measured on
the same cases. It also checks that the model uses the lesion at all: the predicted
probability with the lesion filled with its surroundings' median intensity.

Every method runs at its defaults (Grad-CAM at the network's default layer). Grad-CAM's
localisation depends on the trained weights, so the workflow is also trained with other seeds
(``EXTRA_SEEDS``) and Grad-CAM and Grad-CAM++ are scored for each; and, for comparison, with
the network the quickstart used before (``RESNET``: a ResNet-10 with global average pooling,
output stride 4) at three seeds. ``docs/explain.md`` quotes this benchmark. Run alone:
``python -m benchmarks --only explain``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

NAME = "explain"
ROOT = Path(__file__).resolve().parents[1]
METHODS = ("smoothgrad", "integrated-gradients", "occlusion", "gradcam", "gradcam++")
EXTRA_SEEDS = (1, 7, 3, 11)
RESNET = (
    "model.name=resnet10",
    "model.params={widen_factor: 0.25, conv1_t_size: 5, conv1_t_stride: 2, output_stride: 4}",
)
RESNET_SEEDS = (42, 1, 7)


def _train(folder: Path, quick: bool, seed: int | None = None, sets: tuple[str, ...] = ()) -> Path:
    from medimg.cli.main import main

    old = os.getcwd()
    folder.mkdir(parents=True, exist_ok=True)
    os.chdir(folder)
    try:
        extra = ["--set", "trainer.max_epochs=2"] if quick else []
        extra += ["--set", f"seed={seed}"] if seed is not None else []
        for item in sets:
            extra += ["--set", item]
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            assert main(["run", str(ROOT / "workflows/quickstart_cls.yaml"), *extra]) == 0
    finally:
        os.chdir(old)
    return folder / "runs/quickstart_cls/model"


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure; return result rows (see ``benchmarks.common.row``)."""
    import numpy as np
    import torch

    from benchmarks.common import row
    from medimg.explain import compute_saliency
    from medimg.explain.caseprep import synthetic_lesion_cases
    from medimg.explain.layers import default_target_layer
    from medimg.explain.targets import class_probabilities
    from medimg.inference.model_io import load_trained

    n = 4 if quick else 20
    hits: dict[str, int] = {}
    distances: dict[str, list[float]] = {}  # from each map's peak to the lesion's centre, in voxels
    p_before: list[float] = []
    p_filled: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench_explain_") as tmp:
        root = Path(tmp)
        tm = load_trained(str(_train(root, quick)))
        model = tm.model.eval()
        cases = synthetic_lesion_cases(root, n, tm.preprocess)
        chance = [float(c.structure.mean()) for c in cases if c.structure is not None]
        default_layer = default_target_layer(model, cases[0].tensor)

        def count(net: torch.nn.Module, key: str, method: str) -> None:
            for c in cases:
                assert c.structure is not None
                peak = compute_saliency(net, c.tensor, method, target_class=1).peak_index
                hits[key] = hits.get(key, 0) + bool(c.structure[peak])
                centre = np.argwhere(c.structure).mean(0)
                distances.setdefault(key, []).append(float(np.linalg.norm(np.subtract(peak, centre))))

        for c in cases:
            # does the model use the lesion? fill it with the median of a 2-voxel shell around it
            x, m = c.tensor, torch.as_tensor(c.structure)[None, None]
            shell = (torch.nn.functional.max_pool3d(m.float(), 5, 1, 2) > 0) & ~m
            filled = x.clone()
            filled[m] = x[shell].median()
            with torch.no_grad():
                p_before.append(float(class_probabilities(model(x))[0, 1]))
                p_filled.append(float(class_probabilities(model(filled))[0, 1]))
        for method in METHODS:
            count(model, f"{method} (default)" if method.startswith("gradcam") else method, method)
        for seed in () if quick else EXTRA_SEEDS:
            other = load_trained(str(_train(root / f"seed{seed}", quick, seed))).model.eval()
            for method in ("gradcam", "gradcam++"):
                count(other, f"{method} (default), training seed {seed}", method)
        for seed in () if quick else RESNET_SEEDS:
            resnet = load_trained(str(_train(root / f"resnet{seed}", quick, seed, RESNET))).model.eval()
            count(resnet, f"gradcam (layer4), resnet10 at output stride 4, training seed {seed}", "gradcam")
    base = float(np.mean(chance))
    extra = {
        "cases": n,
        "default_gradcam_layer": default_layer,
        "p_positive_range": [round(min(p_before), 3), round(max(p_before), 3)],
        "p_positive_lesion_filled_range": [round(min(p_filled), 3), round(max(p_filled), 3)],
    }
    return [
        row(
            NAME,
            f"{key}: peak inside the lesion, {n} unseen positive cases, quickstart_cls",
            "fraction of cases",
            hits[key] / n,
            "chance (lesion fraction of the model grid)",
            base,
            higher_is_better=True,
            hits=hits[key],
            median_peak_to_lesion_centre_vox=round(float(np.median(distances[key])), 2),
            **extra,
        )
        for key in hits
    ]


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=2))
