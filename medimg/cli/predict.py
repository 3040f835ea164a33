"""``medimg predict MODEL INPUT...``: cohort inference, model loaded once, resumable."""

from __future__ import annotations

import argparse

from medimg.cli.output import add_json_flag, emit


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "predict",
        help="predict masks/probabilities for a cohort, in each input's own geometry (resumable)",
        description="Apply a trained model to NIfTI files, folders (a hospital export, a study, a series), "
        "folder#series_key, or a manifest CSV (medimg scan's or a training manifest; paths relative to the "
        "manifest). A folder is scanned like medimg scan does: one case per usable DICOM series, named by its "
        "pseudonymous keys; localizers, derived images, secondary captures and non-image objects (SR, ...) "
        "are set aside and listed with their reason in cohort.csv, never read as a volume. The model is loaded once; the next case is read while the current one is on the "
        "network; outputs are written atomically in the background. Masks have exactly the input's shape "
        "and affine. A rerun skips finished cases; a failed case is recorded and the rest go on. "
        "DICOM inputs also get a DICOM SEG and a DICOM SR (TID 1500) referencing the source series. "
        "With --pacs, cases come from a DICOMweb query (QIDO-RS), are retrieved (WADO-RS) and the SEG and "
        "SR are stored back (STOW-RS); credentials come from MEDIMG_PACS_USER/MEDIMG_PACS_PASSWORD or "
        "MEDIMG_PACS_TOKEN, never from the command line. Exit code 0 when no case failed (objects set aside "
        "are not failures), 1 when some cases failed (the summary line gives the counts).",
        epilog="example: medimg predict runs/quickstart_seg/model scans/ --out predictions/",
    )
    p.add_argument("model", help="model folder (workflow.yaml + model.safetensors), MLflow run id, or .ckpt")
    p.add_argument(
        "inputs",
        nargs="*",
        help="NIfTI files, folders (DICOM exports, NIfTI), folder#series_key, or a manifest CSV",
    )
    p.add_argument("--out", required=True, help="output folder (cases/<case>/..., cohort summary CSV)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI when MODEL is a run id")
    p.add_argument("--tta", action="store_true", help="average over axis flips (test-time augmentation)")
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap (default: workflow's)")
    p.add_argument(
        "--sw-batch-size",
        type=int,
        default=None,
        help="windows per forward pass (default: the workflow's; auto: planned from free memory)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--shard", default=None, metavar="I/N", help="run shard I of N (SLURM array jobs)")
    p.add_argument("--prefetch", type=int, default=2, help="cases read ahead of the network (default 2)")
    p.add_argument(
        "-j", "--workers", type=int, default=None, help="processes reading DICOM headers of input folders"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--dicom",
        choices=("auto", "on", "off"),
        default="auto",
        help="write DICOM SEG + SR (auto: when the input is a DICOM series)",
    )
    p.add_argument(
        "--pacs", default=None, metavar="URL", help="DICOMweb base URL of a PACS to read from and store to"
    )
    p.add_argument("--pacs-study", default=None, help="StudyInstanceUID to restrict the PACS query to")
    p.add_argument("--pacs-modality", default=None, help="modality filter of the PACS query, e.g. CT")
    p.add_argument(
        "--pacs-filter",
        action="append",
        default=[],
        metavar="TAG=VALUE",
        help="extra QIDO-RS filter (repeatable), e.g. StudyDate=20240101-20240131",
    )
    p.add_argument("--no-store", action="store_true", help="with --pacs: do not store results back")
    add_json_flag(p)
    return p


def execute(args: argparse.Namespace) -> int:
    import hashlib
    import json
    import os

    import numpy as np

    from medimg.inference.cases import CaseOutputs, parse_shard
    from medimg.inference.cohort import run_cohort
    from medimg.inference.inputs import CollectedInputs, collect_inputs
    from medimg.inference.model_io import load_trained
    from medimg.inference.predictor import Predictor
    from medimg.inference.writers import NiftiMaskWriter
    from medimg.io.volume import Volume

    if not args.inputs and not args.pacs:
        from medimg.errors import ConfigError

        raise ConfigError("give INPUT paths or --pacs URL (nothing to predict)")
    workers = args.workers or min(4, os.cpu_count() or 1)
    found = collect_inputs(args.inputs, workers=workers) if args.inputs else CollectedInputs()
    tm = load_trained(args.model, tracking_uri=args.tracking_uri)
    wf = tm.workflow
    if args.tta:
        wf.inference.tta_flips = True
    if args.overlap is not None:
        wf.inference.overlap = args.overlap
    if args.sw_batch_size is not None:
        wf.inference.sw_batch_size = args.sw_batch_size
    from pathlib import Path

    from medimg.inference.dicom_seg import AlgorithmInfo
    from medimg.inference.writers import DicomSegWriter, DicomSrWriter

    predictor = Predictor(tm.model, wf, device=args.device)
    out_dir = Path(args.out)
    client = None
    cases = found.cases
    if args.pacs:
        from medimg.inference.pacs import PacsClient
        from medimg.inference.pacs_cohort import pacs_cases, pacs_set_aside, query_filters

        client = PacsClient(args.pacs)
        series = client.query_series(
            args.pacs_study, modality=args.pacs_modality, filters=query_filters(args.pacs_filter) or None
        )
        cases = cases + pacs_cases(client, series, out_dir / "pacs_cache")
        found.set_aside += pacs_set_aside(series)
    labels = {int(k): v for k, v in wf.data.labels.items() if int(k) != 0}

    def load_fn(case):  # runs in background threads
        return predictor.preprocess(case.meta.get("image") or str(case.paths[0]))

    if client is not None:
        from medimg.inference.pacs_cohort import retrieving

        load_fn = retrieving(client, load_fn)

    def predict_fn(case, item):
        pred = predictor.predict_item(item, case.case_id)
        if wf.task == "segmentation":
            mask = Volume(pred.mask, pred.source_affine, meta=dict(pred.source_codes))
            extra = {**pred.timings, **({"input_qa_flags": pred.source_qa} if pred.source_qa else {})}
            return CaseOutputs(mask=mask, labels=labels, extra=extra)
        names = [str(i) for i in range(len(pred.probs))]
        return CaseOutputs(
            probabilities=dict(zip(names, map(float, pred.probs), strict=True)),
            extra={"prediction": int(np.argmax(pred.probs)), **pred.timings},
        )

    settings = json.dumps(wf.inference.model_dump(), sort_keys=True)
    algo = AlgorithmInfo(
        name=wf.name, version=__import__("medimg").__version__, weights_sha256=tm.weights_sha256
    )
    dicom_in = client is not None or any(c.meta.get("dicom") for c in cases)
    want_dicom = args.dicom == "on" or (args.dicom == "auto" and dicom_in)
    writers: list = [NiftiMaskWriter()] if wf.task == "segmentation" else []
    if want_dicom:
        writers += ([DicomSegWriter(algo)] if wf.task == "segmentation" else []) + [DicomSrWriter(algo)]
    if client is not None and not args.no_store:
        from medimg.inference.pacs_cohort import PacsStoreWriter

        writers.append(PacsStoreWriter(client))
    report = run_cohort(
        cases,
        predict_fn,
        out_dir,
        load_fn=load_fn,
        writers=writers,
        model_key=tm.weights_sha256,
        settings_key=hashlib.sha256(settings.encode()).hexdigest()[:16],
        prefetch=args.prefetch,
        progress=not args.no_progress,
        shard=parse_shard(args.shard) if args.shard else None,
        set_aside=found.set_aside,
    )
    counts = {k: getattr(report, k) for k in ("done", "skipped", "failed", "set_aside", "unreadable")}
    document = {**counts, "out": str(args.out), "summary_csv": str(report.summary_csv)}
    emit(args, document, [
        f"done {report.done}, skipped {report.skipped}, failed {report.failed}, set aside {report.set_aside}, "
        f"unreadable files {report.unreadable} -> {args.out}",
        f"cohort summary: {report.summary_csv}",
    ])  # fmt: skip
    return 1 if report.failed else 0  # medimg.errors.EXIT_SOME_FAILED: the count is printed above
