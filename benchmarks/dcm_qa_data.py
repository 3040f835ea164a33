"""The dcm2niix QA corpus on disk: which repositories, where they are cached, how to prepare them.

The corpus is a set of public git repositories by the dcm2niix authors
(``https://github.com/neurolabusc/dcm_qa*``); each holds DICOM input in ``In/`` and
the NIfTI + JSON that dcm2niix wrote from it in ``Ref/``. ``prepare`` copies both
folders, file by file, out of bare git clones (``git cat-file``) into
``~/.cache/medimg-data/dcm_qa/<repo>/`` (``$MEDIMG_DATA`` moves the root). A clone
made from a partial snapshot may lack some file contents: those are skipped and
listed in ``<repo>/prepared.json`` under ``missing``, so the runner reports the
reference volumes they concern as skipped instead of as failures. Files stored
gzipped (``*.dcm.gz``, ``*.nii.gz``) are inflated, as each repository's
``batch.sh`` does before running dcm2niix.

Get the clones with ``git clone --bare https://github.com/neurolabusc/<repo>
<mirror>/neurolabusc+<repo>/repo`` (or any snapshot with that layout).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPOS = (
    "dcm_qa", "dcm_qa_mosaic", "dcm_qa_ge", "dcm_qa_sag", "dcm_qa_enh", "dcm_qa_philips",
    "dcm_qa_philips_enh", "dcm_qa_xa30", "dcm_qa_stc", "dcm_qa_canon_61", "dcm_qa_toshiba",
    "dcm_qa_agfa", "dcm_qa_12bit", "dcm_qa_decubitus",
)  # fmt: skip
DEFAULT_MIRROR = Path("/work/.mirror")
FOLDERS = ("In", "Ref")
#: Repositories laid out otherwise: dcm_qa_agfa holds the same images as the scanner exported them
#: (Siemens/) and after an Agfa PACS renamed their private tags (Agfa/), and no dcm2niix output.
PAIRED = {"dcm_qa_agfa": ("Siemens", "Agfa")}
LAYOUT = 2  # bump when prepare writes the cache differently, so it is rewritten


def _unzipped(path: str) -> str:
    """The name a ``.gz`` file has once inflated (the repositories' batch.sh gunzips before dcm2niix)."""
    return path.removesuffix(".gz")


def cache_root() -> Path:
    """``$MEDIMG_DATA/dcm_qa`` (default ``~/.cache/medimg-data/dcm_qa``)."""
    base = os.environ.get("MEDIMG_DATA", str(Path.home() / ".cache" / "medimg-data"))
    return Path(base) / "dcm_qa"


def bare_repo(mirror: Path, repo: str) -> Path:
    """The bare git folder of ``repo`` under ``mirror`` (``neurolabusc+<repo>/repo`` or ``<repo>.git``)."""
    for cand in (mirror / f"neurolabusc+{repo}" / "repo", mirror / f"{repo}.git", mirror / repo):
        if (cand / "HEAD").is_file() or (cand / ".git").exists():
            return cand
    raise FileNotFoundError(
        f"{mirror}: no git clone of {repo} (expected {mirror}/neurolabusc+{repo}/repo; "
        f"get it with 'git clone --bare https://github.com/neurolabusc/{repo} {mirror}/neurolabusc+{repo}/repo')"
    )


@dataclass
class Prepared:
    """What ``prepare_repo`` copied: counts, the commit, and the files absent from the snapshot."""

    repo: str
    commit: str
    written: int = 0
    missing: list[str] = field(default_factory=list)


def _git(repo_dir: Path, *args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(
        ["git", "-C", str(repo_dir), *args], input=stdin, capture_output=True, check=True
    ).stdout


def _blobs(repo_dir: Path, shas: list[str]) -> Iterator[bytes]:
    """Contents of ``shas``, in order, from one ``git cat-file --batch`` process."""
    proc = subprocess.Popen(
        ["git", "-C", str(repo_dir), "cat-file", "--batch"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        for sha in shas:
            proc.stdin.write(f"{sha}\n".encode())
            proc.stdin.flush()
            size = int(proc.stdout.readline().split()[2])
            blob = proc.stdout.read(size)
            proc.stdout.read(1)  # the newline after each object
            yield blob
    finally:
        proc.stdin.close()
        proc.wait()


def prepare_repo(mirror: Path, repo: str, root: Path | None = None) -> Prepared:
    """Copy ``In/`` and ``Ref/`` of one repository's HEAD into the cache, blob by blob.

    A repository already prepared from the same commit is left as it is.
    """
    git_dir = bare_repo(mirror, repo)
    dest = (root or cache_root()) / repo
    commit = _git(git_dir, "rev-parse", "HEAD").decode().strip()
    stamp = dest / "prepared.json"
    folders = PAIRED.get(repo, FOLDERS)
    if stamp.is_file():
        old = json.loads(stamp.read_text())
        if (
            old.get("commit") == commit
            and old.get("layout") == LAYOUT
            and old.get("folders", list(FOLDERS)) == list(folders)
        ):
            return Prepared(repo, commit, old.get("written", 0), old.get("missing", []))
    for folder in folders:  # a stale or partial copy is replaced whole
        shutil.rmtree(dest / folder, ignore_errors=True)
    entries = []
    for line in _git(git_dir, "ls-tree", "-r", "-z", "HEAD", "--", *folders).split(b"\0"):
        if not line:
            continue
        meta, path = line.split(b"\t", 1)
        mode, kind, sha = meta.split()
        if kind == b"blob":
            entries.append((sha.decode(), path.decode()))
    checks = _git(git_dir, "cat-file", "--batch-check", stdin="".join(f"{s}\n" for s, _ in entries).encode())
    result = Prepared(repo, commit)
    present = []
    for (sha, path), check in zip(entries, checks.decode().splitlines(), strict=True):
        if check.endswith("missing"):
            result.missing.append(_unzipped(path))
        else:
            present.append((sha, path))
    for (_, path), blob in zip(present, _blobs(git_dir, [sha for sha, _ in present]), strict=True):
        target = dest / _unzipped(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        tmp.write_bytes(gzip.decompress(blob) if path.endswith(".gz") else blob)
        tmp.replace(target)
        result.written += 1
    dest.mkdir(parents=True, exist_ok=True)
    stamp.write_text(
        json.dumps({**result.__dict__, "layout": LAYOUT, "folders": list(folders)}, indent=2) + "\n"
    )
    return result


def prepared_repos(root: Path | None = None) -> list[str]:
    """Repositories of :data:`REPOS` that ``prepare`` has copied into the cache."""
    base = root or cache_root()
    return [r for r in REPOS if (base / r / "prepared.json").is_file()]


def missing_inputs(repo: str, root: Path | None = None) -> list[str]:
    """Paths (``In/...``, ``Ref/...``) of ``repo`` whose contents the snapshot lacked."""
    stamp = (root or cache_root()) / repo / "prepared.json"
    return list(json.loads(stamp.read_text()).get("missing", [])) if stamp.is_file() else []
