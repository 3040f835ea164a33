"""Conformance of medimg's DICOM reader against dcm2niix's public QA corpus.

Each ``neurolabusc/dcm_qa*`` repository holds DICOM input (``In/``) and what
dcm2niix made of it (``Ref/*.nii`` + JSON sidecars). This runner converts every
``In/`` tree with medimg's own reader (series discovery + ``load_series``, what
``medimg convert ROOT OUT`` does) and checks each reference volume against the
medimg volume of the same series: same voxel grid once both are put in RAS axis
order, affine within 1e-3 mm, equal voxel values (within the reference's rescale
quantisation), same number of volumes for 4D references.

Prepare the data once (bare git clones of the repositories, e.g. the snapshot in
``/work/.mirror`` or ``git clone --bare https://github.com/neurolabusc/<repo>
MIRROR/neurolabusc+<repo>/repo``)::

    python -m benchmarks.bench_dicom_qa prepare [--mirror /work/.mirror] [--repo dcm_qa_enh ...]

This copies ``In/`` and ``Ref/`` into ``~/.cache/medimg-data/dcm_qa/<repo>/``;
contents a snapshot lacks are skipped and listed. Then run::

    python -m benchmarks.bench_dicom_qa run [--repo NAME ...] [--report report.md]

It prints matched/total per repository and one line per mismatch with its reason
(``not found``, ``shape``, ``affine``, ``values``, ``4D``, ``refused: <medimg's
reason>``), the summary "matched X of Y reference volumes (Z %)", and writes JSON to
``benchmarks/results/``. Reference volumes whose input or reference file is absent
from the snapshot are listed as skipped and not counted. medimg is imported from
the Python path, so ``PYTHONPATH=/other/checkout python benchmarks/bench_dicom_qa.py
run`` measures another checkout's reader.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a script: ``benchmarks`` is this file's folder, medimg the user's path
    import importlib.util

    _here = Path(__file__).resolve().parent
    _spec = importlib.util.spec_from_file_location(
        "benchmarks", _here / "__init__.py", submodule_search_locations=[str(_here)]
    )
    assert _spec is not None and _spec.loader is not None
    sys.modules["benchmarks"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["benchmarks"])

from benchmarks.dcm_qa_data import (
    DEFAULT_MIRROR,
    PAIRED,
    REPOS,
    cache_root,
    missing_inputs,
    prepare_repo,
    prepared_repos,
)
from benchmarks.dcm_qa_paired import run_paired
from benchmarks.dcm_qa_run import RepoResult, as_dict, run_repo

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def cmd_prepare(args: argparse.Namespace) -> int:
    """Copy ``In/`` and ``Ref/`` of each repository into the cache; return the number not found."""
    failed = 0
    for repo in args.repo or REPOS:
        t0 = time.perf_counter()
        try:
            done = prepare_repo(Path(args.mirror), repo)
        except FileNotFoundError as exc:
            print(f"{repo}: not prepared: {exc}", file=sys.stderr)
            failed += 1
            continue
        note = f"; {len(done.missing)} absent from the snapshot" if done.missing else ""
        print(f"{repo}: {done.written} files at {done.commit[:10]}{note} ({time.perf_counter() - t0:.1f} s)")
    print(f"cache: {cache_root()}")
    return failed


def medimg_source() -> str:
    """Where the medimg being measured was imported from, with its git commit when known."""
    import subprocess

    import medimg

    where = Path(medimg.__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(where), "log", "-1", "--format=%h %cI"], capture_output=True, text=True
        )
        head = rev.stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "medimg"], capture_output=True, text=True
        )
        head += " + uncommitted changes" if dirty.stdout.strip() else ""
    except OSError:
        head = ""
    return f"{where}" + (f" ({head})" if head else "")


def print_repo(res: RepoResult) -> None:
    """matched/total, then one line per mismatch and per skipped reference."""
    total = res.count("matched") + res.count("mismatch")
    skipped = f", {res.count('skipped')} skipped" if res.count("skipped") else ""
    against = (
        "" if res.reference_kind == "dcm2niix" else f" (against {res.reference_kind}; not in the figure)"
    )
    print(
        f"{res.repo}: matched {res.count('matched')}/{total}{skipped}{against}; medimg converted "
        f"{res.medimg_volumes} series, refused {len(res.medimg_refused)}, "
        f"{res.unreadable_files} unreadable file(s) ({res.seconds:.0f} s)"
    )
    for r in res.references:
        if r.status != "matched" or r.detail:
            detail = f" ({r.detail})" if r.detail else ""
            print(f"  {r.reference}: {r.category}{detail}")


def summary(results: list[RepoResult]) -> tuple[int, int, int, str]:
    """Matched, counted and skipped reference volumes over every repository, and the summary line."""
    results = [r for r in results if r.reference_kind == "dcm2niix"]
    matched = sum(r.count("matched") for r in results)
    total = matched + sum(r.count("mismatch") for r in results)
    skipped = sum(r.count("skipped") for r in results)
    pct = 100.0 * matched / total if total else 0.0
    line = f"matched {matched} of {total} reference volumes ({pct:.1f} %); {skipped} skipped (missing from snapshot)"
    return matched, total, skipped, line


def _max_affine_diff(res: RepoResult) -> str:
    diffs = [
        r.affine_diff_mm for r in res.references if r.status == "matched" and r.affine_diff_mm is not None
    ]
    return f"{max(diffs):.1e}" if diffs else ""


def _cell(text: str) -> str:
    return text.replace("|", "/")


def markdown(results: list[RepoResult], info: dict, source: str) -> str:
    """The per-repository table, the misses, then the skipped references, as Markdown."""
    _, _, _, line = summary(results)
    out = [
        f"Run {info['date']} on {info.get('cpu')} ({info.get('nproc')} CPUs); medimg from {source}.",
        "",
        f"**{line}**",
        "",
        "| repository | matched | reference volumes | skipped | max affine diff of matches (mm) "
        "| medimg series converted | series refused by medimg |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        n = r.count("matched") + r.count("mismatch")
        kind = "" if r.reference_kind == "dcm2niix" else f" (against {r.reference_kind}; not in the figure)"
        out.append(
            f"| {r.repo}{kind} | {r.count('matched')} | {n} | {r.count('skipped')} | {_max_affine_diff(r)} "
            f"| {r.medimg_volumes} | {len(r.medimg_refused)} |"
        )
    for title, wanted in (("Misses", ("mismatch", "matched")), ("Skipped", ("skipped",))):
        rows = [
            f"| {r.repo} | {ref.reference} | {_cell(ref.category)} | {_cell(ref.detail)} |"
            for r in results
            for ref in r.references
            if ref.status in wanted and (ref.status != "matched" or ref.detail)
        ]
        if rows:
            out += [
                "",
                f"{title}:",
                "",
                "| repository | reference | verdict | detail |",
                "|---|---|---|---|",
                *rows,
            ]
    return "\n".join(out) + "\n"


def cmd_run(args: argparse.Namespace, available: list[str]) -> int:
    """Run the comparison on each prepared repository; print, write JSON (and Markdown); return 0."""
    from benchmarks.common import machine

    repos = args.repo or available
    absent = [r for r in repos if r not in available]
    if not available or absent:
        print(
            f"not prepared: {', '.join(absent) or 'any repository'} in {cache_root()}; "
            "run 'python -m benchmarks.bench_dicom_qa prepare' first",
            file=sys.stderr,
        )
        return 2
    warnings.filterwarnings("ignore", module="pydicom")  # VR fix-ups pydicom announces per file
    source = medimg_source()
    print(f"medimg from {source}")
    results = []
    for repo in repos:
        if repo in PAIRED:
            res = run_paired(cache_root() / repo, repo, *PAIRED[repo], workers=args.workers)
        else:
            res = run_repo(cache_root() / repo, repo, missing_inputs(repo), workers=args.workers)
        print_repo(res)
        results.append(res)
    matched, total, skipped, line = summary(results)
    print(line)
    info = machine()
    doc = {"machine": info, "medimg": source, "matched": matched, "total": total, "skipped": skipped,
           "repos": [as_dict(r) for r in results]}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for target in (args.out / f"dicom_qa-{stamp}.json", args.out / "dicom_qa-latest.json"):
        tmp = target.with_name(f".{target.name}.part")
        tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        tmp.replace(target)
    print(f"results: {args.out / 'dicom_qa-latest.json'}")
    if args.report:
        tmp = args.report.with_name(f".{args.report.name}.part")
        tmp.write_text(markdown(results, info, source))
        tmp.replace(args.report)
        print(f"report: {args.report}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``prepare`` or ``run``; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_dicom_qa", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="copy In/ and Ref/ out of bare git clones into the cache")
    p.add_argument(
        "--mirror", default=str(DEFAULT_MIRROR), help="folder holding neurolabusc+<repo>/repo clones"
    )
    p.add_argument("--repo", action="append", choices=REPOS, help="only this repository (repeatable)")
    r = sub.add_parser("run", help="convert each In/ with medimg and compare with Ref/")
    r.add_argument("--repo", action="append", choices=REPOS, help="only this repository (repeatable)")
    r.add_argument("--report", type=Path, help="also write a Markdown report here")
    r.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON result")
    r.add_argument("-j", "--workers", type=int, default=1, help="header-reading processes")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        return cmd_prepare(args)
    return cmd_run(args, prepared_repos())


if __name__ == "__main__":
    raise SystemExit(main())
