"""``medimg explain MODEL INPUT...``: saliency maps, sanity checks and HTML reports for a trained model."""

from __future__ import annotations

import argparse
import textwrap

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
    src.add_argument(
        "--run", default=None, metavar="RUN_ID", help="MLflow run id (or runs:/RUN_ID) of a training run"
    )
    src.add_argument(
        "--model", default=None, metavar="FOLDER", help="model folder (workflow.yaml + model.safetensors)"
    )
    src.add_argument(
        "--checkpoint", default=None, metavar="CKPT", help="Lightning checkpoint (.ckpt, loaded weights-only)"
    )
    src.add_argument(
        "--workflow",
        default=None,
        metavar="WF.yaml",
        help="with --checkpoint: the workflow that built the network (default: the one in the checkpoint)",
    )
    src.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default: the workflow's tracking.uri)"
    )
    p.add_argument(
        "inputs", nargs="+", help="NIfTI files, DICOM series folders, folders of them, or a manifest CSV"
    )
    p.add_argument(
        "--out", required=True, help="output folder: index.html, summary.json, <case>/report.html + maps"
    )
    p.add_argument(
        "--method",
        dest="methods",
        action="append",
        choices=CLS_METHODS + SEG_METHODS,
        default=None,
        help="method (repeatable); default: gradcam (classification) or seg-gradcam (segmentation)",
    )
    p.add_argument(
        "--target-class", type=int, default=None, help="class to explain (default: the predicted class)"
    )
    p.add_argument("--label", type=int, default=1, help="segmentation label to explain (default 1)")
    p.add_argument(
        "--layer", default=None, help="network layer for Grad-CAM methods (default: per network family)"
    )
    p.add_argument(
        "--uncertainty", choices=("flip", "mc-dropout"), default="flip", help="uncertainty map source"
    )
    p.add_argument(
        "--reference-column",
        default=None,
        help="manifest column with the reference class (default: the workflow's data.label_column)",
    )
    p.add_argument(
        "--mask-column",
        default="lesion",
        help="manifest column with a lesion/organ mask for the second overlay (default: lesion)",
    )
    p.add_argument(
        "--no-sanity", action="store_true", help="skip the randomisation test and deletion/insertion"
    )
    p.add_argument(
        "--voxel-budget",
        type=int,
        default=None,
        help="maps of larger inputs are computed on a coarser grid (default 4194304 voxels)",
    )
    p.add_argument(
        "--sort-by",
        choices=("error", "confidence", "case", "status"),
        default="error",
        help="initial order of index.html (default: error)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cpu)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log outputs to the model's MLflow run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_flag(p)
    return p


def _load(args: argparse.Namespace):
    from medimg.errors import ConfigError
    from medimg.inference.model_io import load_trained

    given = [a for a in ("run", "model", "checkpoint") if getattr(args, a)]
    if len(given) != 1:
        raise ConfigError("give exactly one of --run RUN_ID, --model FOLDER or --checkpoint CKPT")
    if args.workflow and not args.checkpoint:
        raise ConfigError("--workflow goes with --checkpoint (runs and model folders carry their workflow)")
    tm = load_trained(getattr(args, given[0]), tracking_uri=args.tracking_uri)
    if args.workflow:
        from medimg.config.load import load_workflow
        from medimg.models.networks import build_model

        wf = load_workflow(args.workflow)
        net = build_model(wf)
        net.load_state_dict(tm.model.state_dict())
        tm.model, tm.workflow = net.eval(), wf
    return tm


def _cases(inputs: list[str], reference_column: str | None, mask_column: str | None):
    """Explain cases from the same inputs ``medimg predict`` takes (see ``collect_inputs``).

    A manifest row also gives the reference class and the lesion/organ mask (its path
    relative to the manifest, as the image's).
    """
    from medimg.errors import DataError
    from medimg.explain.runner import ExplainCase
    from medimg.inference.inputs import collect_inputs, resolve_path

    found = collect_inputs(inputs)
    for item in found.set_aside:
        print(f"  {item.status.replace('_', ' ')} {item.case_id}: {item.kind}: {item.reason}")
    cases = []
    for c in found.cases:
        row, root = c.meta.get("row") or {}, c.meta.get("root")
        ref = str(row.get(reference_column) or "") if reference_column else ""
        mask = str(row.get(mask_column) or "") if mask_column else ""
        try:
            reference = int(float(ref)) if ref.strip() else None
        except ValueError:
            raise DataError(
                f"case {c.case_id}: reference {reference_column}={ref!r} is not a class number"
            ) from None
        cases.append(
            ExplainCase(
                c.case_id,
                c.meta.get("image") or c.paths[0],
                reference=reference,
                mask=resolve_path(root, mask) if mask.strip() and root is not None else None,
            )
        )
    return cases


def execute(args: argparse.Namespace) -> int:
    import logging

    import torch

    from medimg.explain.maps import DEFAULT_VOXEL_BUDGET
    from medimg.explain.runner import explain_cohort

    tm = _load(args)
    task = tm.task
    methods = args.methods or (["gradcam"] if task == "classification" else ["seg-gradcam"])
    ref_col = args.reference_column or (tm.workflow.data.label_column if task == "classification" else None)
    cases = _cases(args.inputs, ref_col, args.mask_column)
    device = torch.device(args.device or "cpu")
    model = tm.model.to(device).eval()

    def preprocess(path: str):
        tensor, meta = tm.preprocess(path)
        return tensor.to(device), meta

    params: dict[str, dict] = {}
    if args.layer:
        for m in ("gradcam", "gradcam++", "seg-gradcam"):
            params[m] = {"layer": args.layer}
    params["uncertainty"] = {"mode": args.uncertainty}
    info = {
        "model_id": f"{tm.workflow.name} ({tm.workflow.model.name})",
        "run_id": tm.run_id,
        "weights_sha256": tm.weights_sha256,
        "task": task,
    }
    run_id = None if args.no_mlflow else tm.run_id
    if run_id:
        import mlflow

        mlflow.set_tracking_uri(args.tracking_uri or tm.workflow.tracking.uri)
    result = explain_cohort(
        cases,
        model,
        args.out,
        methods,
        task=task,
        preprocess=preprocess,
        target_class=args.target_class,
        label=args.label,
        method_params=params,
        model_info=info,
        sanity=not args.no_sanity,
        voxel_budget=args.voxel_budget or DEFAULT_VOXEL_BUDGET,
        sort_by=args.sort_by,
        progress=not args.no_progress,
        mlflow_run_id=run_id,
        workflow=tm.workflow,
    )
    log = logging.getLogger("medimg.explain")
    document = {
        "explained": len(result.reports), "cases": len(cases), "failed": len(result.failures),
        "failures": [{"case_key": key, "reason": reason} for key, reason in result.failures.items()],
        "index": str(result.index), "reports": {key: str(path) for key, path in result.reports.items()},
        "methods": methods, "mlflow_run_id": run_id,
    }  # fmt: skip
    emit(args, document, [
        f"explained {len(result.reports)} of {len(cases)} cases; {len(result.failures)} failed",
        *(f"  FAILED {key}: {reason}" for key, reason in result.failures.items()),
        f"  index: {result.index}",
    ])  # fmt: skip
    if run_id:
        log.info("logged to MLflow run %s (artifacts: explain/)", run_id)
    return result.exit_code
