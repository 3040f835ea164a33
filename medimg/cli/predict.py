"""``medimg predict MODEL INPUT...``: cohort inference, model loaded once, resumable."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "predict",
        help="predict masks/probabilities for a cohort, in each input's own geometry (resumable)",
        description="Apply a trained model to NIfTI files, DICOM series folders, folders of them, or a "
        "manifest CSV. The model is loaded once; the next case is read while the current one is on the "
        "network; outputs are written atomically in the background. Masks have exactly the input's shape "
        "and affine. A rerun skips finished cases; a failed case is recorded and the rest go on. "
        "Exit code 0: all cases done; 1: some failed.",
        epilog="example: medimg predict runs/quickstart_seg/model scans/ --out predictions/",
    )
    p.add_argument("model", help="model folder (workflow.yaml + model.safetensors), MLflow run id, or .ckpt")
    p.add_argument("inputs", nargs="+", help="NIfTI files, DICOM series folders, folders of them, or a CSV")
    p.add_argument("--out", required=True, help="output folder (cases/<case>/..., cohort summary CSV)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI when MODEL is a run id")
    p.add_argument("--tta", action="store_true", help="average over axis flips (test-time augmentation)")
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap (default: workflow's)")
    p.add_argument("--sw-batch-size", type=int, default=None, help="windows per forward pass")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--shard", default=None, metavar="I/N", help="run shard I of N (SLURM array jobs)")
    p.add_argument("--prefetch", type=int, default=2, help="cases read ahead of the network (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def execute(args: argparse.Namespace) -> int:
    import hashlib
    import json

    import numpy as np

    from medimg.inference.cases import CaseOutputs, parse_shard
    from medimg.inference.cohort import run_cohort
    from medimg.inference.inputs import collect_cases
    from medimg.inference.model_io import load_trained
    from medimg.inference.predictor import Predictor
    from medimg.inference.writers import NiftiMaskWriter
    from medimg.io.volume import Volume

    tm = load_trained(args.model, tracking_uri=args.tracking_uri)
    wf = tm.workflow
    if args.tta:
        wf.inference.tta_flips = True
    if args.overlap is not None:
        wf.inference.overlap = args.overlap
    if args.sw_batch_size is not None:
        wf.inference.sw_batch_size = args.sw_batch_size
    predictor = Predictor(tm.model, wf, device=args.device)
    cases = collect_cases(args.inputs)
    labels = {int(k): v for k, v in wf.data.labels.items() if int(k) != 0}

    def load_fn(case):  # runs in background threads
        return predictor.preprocess(str(case.paths[0]))

    def predict_fn(case, item):
        pred = predictor.predict_item(item, case.case_id)
        if wf.task == "segmentation":
            return CaseOutputs(mask=Volume(pred.mask, pred.source_affine), labels=labels, extra=pred.timings)
        names = [str(i) for i in range(len(pred.probs))]
        return CaseOutputs(probabilities=dict(zip(names, map(float, pred.probs), strict=True)),
                           extra={"prediction": int(np.argmax(pred.probs)), **pred.timings})

    settings = json.dumps(wf.inference.model_dump(), sort_keys=True)
    writers = [NiftiMaskWriter()] if wf.task == "segmentation" else []
    report = run_cohort(cases, predict_fn, __import__("pathlib").Path(args.out), load_fn=load_fn,
                        writers=writers, model_key=tm.weights_sha256,
                        settings_key=hashlib.sha256(settings.encode()).hexdigest()[:16],
                        prefetch=args.prefetch, progress=not args.no_progress,
                        shard=parse_shard(args.shard) if args.shard else None)
    print(f"done {report.done}, skipped {report.skipped}, failed {report.failed} -> {args.out}")
    return report.exit_code
