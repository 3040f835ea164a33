"""One repository of the dcm2niix QA corpus: convert ``In/`` with medimg, match and judge each ``Ref/`` volume.

Reference volumes are matched to medimg's series by the SeriesNumber and
SeriesDescription in the JSON sidecar dcm2niix wrote beside them (the number alone
when no series carries the description; every series when the sidecar has no
number), then by grid and content: a reference is matched when one of those
series, not already matched to another reference, passes
:func:`benchmarks.dcm_qa_compare.compare`.
Otherwise its reason is the nearest miss among the candidates (``values`` over
``affine`` over ``shape`` over ``4D``), ``refused: <medimg's reason>`` when medimg
declined every candidate, ``not found`` when no input series carries its number, or
``skipped`` when the snapshot lacked its reference file or its input.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.dcm_qa_compare import Image, Verdict, compare, read_reference

log = logging.getLogger("medimg.dcm_qa")


@dataclass
class RefResult:
    """The verdict on one reference volume."""

    reference: str
    status: str  # matched | mismatch | skipped
    category: str  # matched, 4D, shape, affine, values, not found, refused: ..., skipped: ...
    detail: str = ""
    series_number: int | None = None
    affine_diff_mm: float | None = None


@dataclass
class RepoResult:
    """Verdicts on every reference volume of one repository, and what medimg made of its input."""

    repo: str
    references: list[RefResult] = field(default_factory=list)
    medimg_volumes: int = 0
    medimg_refused: list[str] = field(default_factory=list)
    unreadable_files: int = 0
    seconds: float = 0.0
    reference_kind: str = "dcm2niix"  # what the references are: dcm2niix's Ref/, or a copy medimg read

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.references)


@dataclass
class Candidate:
    """One series medimg found: its number, description, kind and (once loaded) volume or refusal."""

    series: Any
    numbers: set[int | None]
    descriptions: set[str]
    loaded: Image | None = None
    refusal: str = ""
    used: bool = False
    converted: bool = False  # medimg produced a volume (kept after the voxels are freed)


def series_tags(series: Any) -> tuple[set[int | None], set[str]]:
    """SeriesNumber and SeriesDescription values over every file of a medimg series."""
    import pydicom

    numbers, descriptions = set(), set()
    for h in series.headers:
        ds = pydicom.dcmread(
            h.path, stop_before_pixels=True, specific_tags=["SeriesNumber", "SeriesDescription"]
        )
        number = ds.get("SeriesNumber")
        numbers.add(int(number) if number not in (None, "") else None)
        descriptions.add(str(ds.get("SeriesDescription", "")).strip())
    return numbers, descriptions


def load_candidate(cand: Candidate) -> None:
    """Load a candidate's volume once with medimg's reader, or record why medimg refused it."""
    from medimg.errors import MedimgError
    from medimg.io.dicom.assemble import load_series

    if cand.loaded is not None or cand.refusal:
        return
    s = cand.series
    if s.kind != "volume":
        cand.refusal = f"{s.kind}: {s.reason}"
        return
    try:
        vol = load_series(s.headers)
    except MedimgError as exc:
        cand.refusal = str(exc).split(": ", 1)[-1]
        return
    except BaseException as exc:  # a crash (even a decoder's panic) is a finding, not the end of the run
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        log.exception("medimg crashed on %s", s.folder)
        cand.refusal = f"crash ({type(exc).__name__}: {exc})"
        return
    cand.loaded = Image(np.asarray(vol.data), vol.affine_in("RAS"))
    cand.converted = True


def _sidecar(nii: Path) -> dict:
    name = nii.name.removesuffix(".gz").removesuffix(".nii") + ".json"
    try:
        return json.loads((nii.parent / name).read_text())
    except (OSError, ValueError):
        return {}


def _nifti_name(name: str) -> bool:
    return name.endswith((".nii", ".nii.gz"))


def _judge(ref_path: Path, cands: list[Candidate], number: int | None) -> RefResult:
    name = f"Ref/{ref_path.name}"
    try:
        ref = read_reference(str(ref_path))
    except Exception as exc:  # the runner's own limit, not medimg's
        return RefResult(
            name, "skipped", "skipped: reference unreadable here", f"{type(exc).__name__}: {exc}", number
        )
    return judge_image(name, ref, cands, number)


def judge_image(name: str, ref: Image, cands: list[Candidate], number: int | None) -> RefResult:
    """The verdict on reference image ``ref`` against the unused candidates (loaded on demand)."""
    tried: list[Verdict] = []
    for cand in cands:
        load_candidate(cand)
        if cand.loaded is None or cand.used:
            continue
        verdict = compare(ref, cand.loaded)
        if verdict.ok:
            cand.used = True
            return RefResult(name, "matched", "matched", verdict.detail, number, verdict.affine_diff_mm)
        tried.append(verdict)
    if tried:
        best = max(tried, key=lambda v: v.stage)
        aff = None if np.isnan(best.affine_diff_mm) else best.affine_diff_mm
        return RefResult(name, "mismatch", best.category, best.detail, number, aff)
    refusals = sorted({c.refusal for c in cands if c.refusal})
    if refusals:
        return RefResult(name, "mismatch", f"refused: {refusals[0]}", "; ".join(refusals[1:]), number)
    if cands:  # every candidate already matched another reference
        return RefResult(name, "mismatch", "not found", "its series' volumes match other references", number)
    return RefResult(name, "mismatch", "not found", f"no input series with SeriesNumber {number}", number)


def _names_series(path: Path, number: int | None, description: str) -> bool:
    """True when a file path carries a series' number (a bare number token) or its description."""
    tokens = {int(t) for t in re.findall(r"(?<![\d.])\d+(?![\d.])", str(path))}
    squash = re.sub(r"[^a-z0-9]", "", description.lower())
    return (number is not None and number in tokens) or bool(
        squash and squash in re.sub(r"[^a-z0-9]", "", str(path).lower())
    )


def _rel(path: str | Path, root: Path) -> Path:
    """``path`` relative to the repository's folder (``In/...``), so cache paths never count as names."""
    p = Path(path)
    return p.relative_to(root) if p.is_relative_to(root) else p


def _input_lacking(
    root: Path,
    pool: list[Candidate],
    cands: list[Candidate],
    missing: list[Path],
    number: int | None,
    description: str,
) -> bool:
    """Did the snapshot lack this reference's input? Then its miss is no finding about medimg.

    With no readable series of its own, the input is missing when a missing file's path names
    the series (its number or description). With series of its own, when a file is missing from a
    folder that holds that series of single-frame slices and no other series.
    """
    if not missing:
        return False
    if not pool:
        return any(_names_series(m, number, description) for m in missing)
    dirs = {str(m.parent) for m in missing}
    for cand in pool:
        folder = str(_rel(cand.series.folder, root))
        alone = not any(c is not cand and c.series.folder == cand.series.folder for c in cands)
        if folder in dirs and cand.series.first.number_of_frames == 1 and alone:
            return True
    return False


def _reference_groups(refs: list[Path]) -> dict[tuple[int | None, str], list[Path]]:
    """Reference files grouped by (SeriesNumber, SeriesDescription) from their JSON sidecars."""
    groups: dict[tuple[int | None, str], list[Path]] = defaultdict(list)
    for p in refs:
        side = _sidecar(p)
        number = side.get("SeriesNumber")
        number = int(number) if isinstance(number, (int, float)) else None
        groups[(number, str(side.get("SeriesDescription", "")).strip())].append(p)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0] is None, kv[0][0] or 0, kv[0][1])))


def _pool(cands: list[Candidate], number: int | None, description: str) -> list[Candidate]:
    """Series that may hold a reference: same number (and description, when any carries it)."""
    if number is None:
        return cands
    pool = [c for c in cands if number in c.numbers]
    same = [c for c in pool if description in c.descriptions]
    return same or pool  # series numbers repeat across the studies of one repository


def _count_series(result: RepoResult, cands: list[Candidate]) -> None:
    """Every series medimg would convert, referenced or not, and every one it refused."""
    for c in cands:
        if not (c.converted or c.refusal):
            load_candidate(c)
            c.loaded = None
        if c.converted:
            result.medimg_volumes += 1
        else:
            number = "/".join(str(n) for n in sorted(c.numbers, key=str))
            result.medimg_refused.append(f"series {number} ({'/'.join(sorted(c.descriptions))}): {c.refusal}")


def _strip_root(result: RepoResult, root: Path) -> None:
    """Paths in medimg's messages relative to the repository (``In/...``), not to this machine's cache."""
    prefix = f"{root}/"
    for r in result.references:
        r.category, r.detail = r.category.replace(prefix, ""), r.detail.replace(prefix, "")
    result.medimg_refused = [m.replace(prefix, "") for m in result.medimg_refused]


def run_repo(root: Path, repo: str, missing: list[str], workers: int = 1) -> RepoResult:
    """Convert ``root/In`` with medimg and judge every ``root/Ref`` NIfTI (see the module docstring)."""
    import time

    from medimg.io.dicom.discover import discover

    t0 = time.perf_counter()
    result = RepoResult(repo)
    missing_in = [Path(m) for m in missing if m.startswith("In/")]
    for m in sorted(m for m in missing if m.startswith("Ref/") and _nifti_name(m)):
        result.references.append(RefResult(m, "skipped", "skipped: reference missing from snapshot"))
    ref_dir = root / "Ref"
    refs = sorted(p for p in ref_dir.glob("*") if _nifti_name(p.name)) if ref_dir.is_dir() else []
    if refs:
        series, excluded = discover(root / "In", workers=workers)
        result.unreadable_files = len(excluded)
        cands = [Candidate(s, *series_tags(s)) for s in series]
        for (number, description), paths in _reference_groups(refs).items():
            pool = _pool(cands, number, description)
            for ref_path in paths:
                got = _judge(ref_path, pool, number)
                unread = [e for e in excluded if _names_series(_rel(e.path, root), number, description)]
                if got.category == "not found" and unread:
                    why = f"{_rel(unread[0].path, root)}: {unread[0].reason}"
                    got = RefResult(
                        got.reference, "mismatch", f"refused: {why}", f"{len(unread)} such file(s)", number
                    )
                elif got.status == "mismatch" and _input_lacking(
                    root, pool, cands, missing_in, number, description
                ):
                    why = f"medimg's verdict: {got.category}"
                    got = RefResult(
                        got.reference, "skipped", "skipped: input missing from snapshot", why, number
                    )
                result.references.append(got)
            for c in pool:  # free this group's voxels before the next
                c.loaded = None
        _count_series(result, cands)
    _strip_root(result, root)
    result.seconds = round(time.perf_counter() - t0, 1)
    return result


def as_dict(result: RepoResult) -> dict[str, Any]:
    """JSON-ready form of a repository's result."""
    out = asdict(result)
    out.update(
        matched=result.count("matched"), mismatched=result.count("mismatch"), skipped=result.count("skipped")
    )
    return out
