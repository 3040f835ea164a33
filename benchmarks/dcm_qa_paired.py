"""A repository without dcm2niix output: the same images in two copies must read the same.

``dcm_qa_agfa`` holds a Siemens export (``Siemens/``) and the same images after an
Agfa PACS renamed their private tags (``Agfa/``). medimg converts both; each series
of the second copy is judged against medimg's own volume of the first copy with the
same SeriesNumber and SeriesDescription, by the same checks as a dcm2niix reference
(:func:`benchmarks.dcm_qa_compare.compare`). This is a consistency check, not a
comparison with dcm2niix, so the runner reports it apart from the corpus figure.
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.dcm_qa_run import (
    Candidate,
    RefResult,
    RepoResult,
    judge_image,
    load_candidate,
    series_tags,
)


def run_paired(root: Path, repo: str, first: str, second: str, workers: int = 1) -> RepoResult:
    """Judge every series medimg reads from ``root/second`` against its twin in ``root/first``."""
    from medimg.io.dicom.discover import discover

    t0 = time.perf_counter()
    result = RepoResult(repo, reference_kind=f"medimg's {first}/ conversion")
    copies = []
    for folder in (first, second):
        series, excluded = discover(root / folder, workers=workers)
        result.unreadable_files += len(excluded)
        copies.append([Candidate(s, *series_tags(s)) for s in series])
    originals, twins = copies
    for orig in originals:
        load_candidate(orig)
        number = min((n for n in orig.numbers if n is not None), default=None)
        description = next(iter(sorted(orig.descriptions)), "")
        name = f"{first}/ series {number} ({description})"
        if orig.loaded is None:
            result.references.append(
                RefResult(name, "skipped", f"skipped: medimg refused it ({orig.refusal})")
            )
            continue
        pool = [c for c in twins if orig.numbers & c.numbers and orig.descriptions & c.descriptions]
        got = judge_image(name, orig.loaded, pool, number)
        result.references.append(got)
        orig.loaded = None
        for c in pool:
            c.loaded = None
    result.medimg_volumes = sum(c.converted for c in originals + twins)
    result.medimg_refused = [c.refusal for c in originals + twins if c.refusal]
    result.seconds = round(time.perf_counter() - t0, 1)
    return result
