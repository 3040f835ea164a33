"""``medimg explain MODEL INPUT...``: saliency maps, sanity checks and HTML reports for a trained model.

The work is done by :func:`medimg.explain.inputs.explain_inputs`.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from medimg.cli.output import add_json_flag, emit

CLS_METHODS = ("gradcam", "gradcam++", "occlusion", "integrated-gradients", "smoothgrad")
SEG_METHODS = ("seg-gradcam", "seg-integrated-gradients", "seg-smoothgrad", "uncertainty")


_DESCRIPTION = textwrap.fill(
    "Explain a trained model's predictions case by case. Classification: Grad-CAM, Grad-CAM++, "
    "occlusion sensitivity, integrated gradients, SmoothGrad. Segmentation: Seg-Grad-CAM, integrated "
    "gradients and SmoothGrad for one label, computed over the sliding windows prediction uses, "
    "and a voxel-wise uncertainty map (flip test-time augmentation or MC dropout). Each map is written as "
    "NIfTI with exactly the input scan's shape and affine (opens over the scan in 3D Slicer or ITK-SNAP). "
    "Each case gets a self-contained HTML report (images embedded, nothing fetched, no patient data: "
    "the case key only) with tri-planar overlays through the map's peak and through the lesion/organ "
    "centre, the model's run id and weights sha256, and sanity checks: the model-parameter "
    "randomisation test (Spearman, SSIM) and deletion/insertion curves (AUC), with a plain-language "
    "verdict. index.html links the reports, sortable by confidence or error. When the model comes from "
    "an MLflow run, the outputs are logged as artifacts (explain/) of that run. "
    "Exit code: 0 when every case was explained, 1 when some failed (docs/refusals.md).",
    width=100,
)


MODEL_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("--run", {"default": None, "metavar": "RUN_ID", "help": "MLflow run id (or runs:/RUN_ID) of a training run"}),
    ("--model", {"default": None, "metavar": "FOLDER", "help": "model folder (workflow.yaml + model.safetensors)"}),
    ("--checkpoint", {"default": None, "metavar": "CKPT", "help": "Lightning checkpoint (.ckpt, loaded weights-only)"}),
    ("--workflow", {"default": None, "metavar": "WF.yaml", "help": "with --checkpoint: the workflow that built the "
                    "network (default: the one in the checkpoint)"}),
    ("--tracking-uri", {"default": None, "help": "MLflow tracking URI (default: the workflow's tracking.uri)"}),
]  # fmt: skip
OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("inputs", {"nargs": "+", "help": "NIfTI files, DICOM series folders, folders of them, or a manifest CSV"}),
    ("--out", {"required": True, "help": "output folder: index.html, summary.json, <case>/report.html + maps"}),
    ("--method", {"dest": "methods", "action": "append", "choices": CLS_METHODS + SEG_METHODS, "default": None,
                  "help": "method (repeatable); default: gradcam (classification) or seg-gradcam (segmentation)"}),
    ("--target-class", {"type": int, "default": None, "help": "class to explain (default: the predicted class)"}),
    ("--label", {"type": int, "default": 1, "help": "segmentation label to explain (default 1)"}),
    ("--layer", {"default": None, "help": "network layer for Grad-CAM methods (default: per network family)"}),
    ("--uncertainty", {"choices": ("flip", "mc-dropout"), "default": "flip", "help": "uncertainty map source"}),
    ("--reference-column", {"default": None, "help": "manifest column with the reference class (default: the "
                            "workflow's data.label_column)"}),
    ("--mask-column", {"default": "lesion", "help": "manifest column with a lesion/organ mask for the second "
                       "overlay (default: lesion)"}),
    ("--no-sanity", {"action": "store_true", "help": "skip the randomisation test and deletion/insertion"}),
    ("--voxel-budget", {"type": int, "default": None, "help": "maps of larger inputs are computed on a coarser "
                        "grid (default 4194304 voxels)"}),
    ("--sort-by", {"choices": ("error", "confidence", "case", "status"), "default": "error",
                   "help": "initial order of index.html (default: error)"}),
    ("--device", {"default": None, "help": "cpu, cuda, cuda:1 (default: cpu)"}),
    ("--no-mlflow", {"action": "store_true", "help": "do not log outputs to the model's MLflow run"}),
    ("--no-progress", {"action": "store_true", "help": "no progress bar"}),
]  # fmt: skip


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "explain",
        help="saliency maps + sanity checks + self-contained HTML reports for a trained model",
        description=_DESCRIPTION,
        epilog="examples:\n"
        "  medimg explain --run 3f2a...e1 runs/data/synthetic_cls/manifest.csv --out explain/\n"
        "  medimg explain --model runs/quickstart_cls/model scans/case_001.nii.gz --method gradcam "
        "--method occlusion --out explain/\n"
        "  medimg explain --checkpoint last.ckpt --workflow wf.yaml scans/ --method seg-gradcam --label 1 --out x/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("model (one of)")
    for flag, keywords in MODEL_OPTIONS:
        src.add_argument(flag, **keywords)
    for flag, keywords in OPTIONS:
        p.add_argument(flag, **keywords)
    add_json_flag(p)
    return p


def execute(args: argparse.Namespace) -> int:
    from medimg.explain.inputs import explain_inputs

    names = ("run", "model", "checkpoint", "workflow", "tracking_uri", "methods", "target_class", "label")
    names += ("layer", "uncertainty", "reference_column", "mask_column", "voxel_budget", "sort_by", "device")
    document, lines, code = explain_inputs(
        args.inputs,
        args.out,
        sanity=not args.no_sanity,
        mlflow=not args.no_mlflow,
        progress=not args.no_progress,
        **{name: getattr(args, name) for name in names},
    )
    emit(args, document, lines)
    return code
