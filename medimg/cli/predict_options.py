"""The options of ``medimg predict`` beyond its model, inputs and output folder (:mod:`medimg.cli.predict`)."""

from __future__ import annotations

import argparse


def run_options(p: argparse.ArgumentParser) -> None:
    """How the cases are predicted and written, and read from (and stored to) a PACS."""
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
    for flag, text in GENERATOR_FLAGS.items():  # a generator makes cases instead of reading any
        p.add_argument(f"--{flag}", type=int, default=None, help=text)


GENERATOR_FLAGS = {
    "class-index": "a synthesis model folder (a generator): the class of the cases to generate",
    "count": "a synthesis model folder: how many cases to generate",
    "seed": "a synthesis model folder: the seed of the cases (default 0)",
}
