"""Cohort runner: outputs, summary, failures recorded, reruns skip, shards partition."""

from __future__ import annotations

import csv
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from medimg.errors import ConfigError, DataError
from medimg.inference.cases import CaseInput, CaseOutputs, content_sha256, parse_shard, shard_cases
from medimg.inference.cohort import QcLimits, run_cohort
from medimg.inference.cohort_summary import merge_summaries
from medimg.inference.ledger import Ledger
from medimg.inference.writers import NiftiMaskWriter
from medimg.io.atomic import atomic_write_text
from medimg.io.nifti import load_nifti, save_nifti
from medimg.io.volume import Volume

AFFINE = np.array(
    [[0.0, -0.9, 0.1, 10.0], [1.2, 0.0, 0.0, -5.0], [0.0, 0.05, 2.5, 3.0], [0.0, 0.0, 0.0, 1.0]]
)


def _make_cases(root: Path, n: int) -> list[CaseInput]:
    cases = []
    for i in range(n):
        data = np.zeros((12, 10, 6), np.float32)
        data[1 : 3 + i, 2:6, 1:4] = 100.0  # case i has (2 + i) * 4 * 3 foreground voxels
        path = save_nifti(Volume(data, AFFINE, "RAS"), root / f"in_{i}.nii.gz")
        cases.append(CaseInput(f"case-{i:03d}", (path,)))
    return cases


def _load(case: CaseInput) -> Volume:
    vol = load_nifti(case.paths[0])
    if case.meta.get("modality") == "MR":
        raise DataError(f"{case.paths[0]}: modality MR, expected CT")
    return vol


class _Predictor:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, case: CaseInput, vol: Volume) -> CaseOutputs:
        with self.lock:
            self.calls.append(case.case_id)
        if case.meta.get("oom"):
            raise MemoryError("simulated out of memory")
        mask = (vol.data > 50).astype(np.uint8)
        return CaseOutputs(mask=Volume(mask, vol.affine, vol.space), labels={1: "lesion"})


def _run(cases, out, predictor, settings="s1", writers=None, progress=False, load_fn=_load, **kw):
    """``run_cohort`` with the test keys; the NIfTI mask writer unless ``writers`` is given."""
    return run_cohort(
        cases,
        predictor,
        out,
        load_fn=load_fn,
        writers=[NiftiMaskWriter()] if writers is None else writers,
        model_key="m1",
        settings_key=settings,
        progress=progress,
        **kw,
    )


def test_cohort_outputs_failures_and_summary(tmp_path: Path) -> None:
    cases = _make_cases(tmp_path / "in", 4)
    bad = tmp_path / "in" / "broken.nii.gz"
    bad.write_bytes(b"not a nifti file")
    mr = CaseInput("case-mr", cases[0].paths, meta={"modality": "MR"}, content_sha256="mr-content")
    oom = CaseInput("case-oom", cases[1].paths, meta={"oom": True}, content_sha256="oom-content")
    twin = CaseInput("case-twin", cases[3].paths)  # same content as case-003, its own outputs
    cohort = [*cases[:2], CaseInput("case-broken", (bad,)), mr, oom, *cases[2:], twin]
    predictor = _Predictor()
    report = _run(cohort, tmp_path / "out", predictor)

    assert (report.done, report.failed, report.skipped) == (5, 3, 0)
    assert report.exit_code == 1  # some failed; never the count (3 would read as an input error)
    voxel_ml = abs(np.linalg.det(AFFINE[:3, :3])) / 1000
    with open(report.summary_csv, newline="") as fh:
        rows = {r["case_id"]: r for r in csv.DictReader(fh)}
    assert list(rows) == [c.case_id for c in cohort]
    for i, case in enumerate([*cases, twin]):
        i = min(i, 3)
        row = rows[case.case_id]
        assert row["status"] == "done" and row["reason"] == ""
        assert float(row["volume_ml:lesion"]) == pytest.approx((2 + i) * 12 * voxel_ml, rel=1e-3)
        mask = load_nifti(tmp_path / "out" / "cases" / case.case_id / "mask.nii.gz")
        np.testing.assert_allclose(mask.affine, AFFINE, atol=1e-5)
        assert int(mask.data.sum()) == (2 + i) * 12
        doc = json.loads((tmp_path / "out" / "cases" / case.case_id / "case.json").read_text())
        assert doc["status"] == "done" and doc["model_key"] == "m1" and doc["outputs"] == ["mask.nii.gz"]
    assert "DataError" in rows["case-broken"]["reason"] and "broken.nii.gz" in rows["case-broken"]["reason"]
    assert "modality MR" in rows["case-mr"]["reason"]
    assert rows["case-oom"]["reason"] == "MemoryError: simulated out of memory"
    assert json.loads((tmp_path / "out/cases/case-oom/case.json").read_text())["status"] == "failed"
    assert not [p for p in (tmp_path / "out").rglob(".*part*")]


def test_rerun_skips_done_and_retries_failed(tmp_path: Path) -> None:
    cases = _make_cases(tmp_path / "in", 3)
    oom = CaseInput("case-oom", cases[0].paths, meta={"oom": True}, content_sha256="oom")
    first = _Predictor()
    assert _run([*cases, oom], tmp_path / "out", first).failed == 1
    again = _Predictor()
    report = _run(
        [*cases, CaseInput("case-oom", cases[0].paths, content_sha256="oom")], tmp_path / "out", again
    )
    assert again.calls == ["case-oom"]
    assert (report.skipped, report.done, report.exit_code) == (3, 1, 0)
    with open(report.summary_csv, newline="") as fh:
        assert float(next(csv.DictReader(fh))["volume_ml:lesion"]) > 0  # skipped rows keep their numbers
    # A missing output makes a done case run again; other settings make every case run again.
    (tmp_path / "out/cases/case-001/mask.nii.gz").unlink()
    third = _Predictor()
    _run(cases, tmp_path / "out", third)
    assert third.calls == ["case-001"]
    fourth = _Predictor()
    assert _run(cases, tmp_path / "out", fourth, settings="s2").done == 3
    assert sorted(fourth.calls) == ["case-000", "case-001", "case-002"]


def test_content_key_ignores_names(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.dcm").write_bytes(b"one")
    (tmp_path / "a" / "y.dcm").write_bytes(b"two")
    (tmp_path / "b" / "q.dcm").write_bytes(b"two")
    (tmp_path / "b" / "r.dcm").write_bytes(b"one")
    assert content_sha256([tmp_path / "a"]) == content_sha256([tmp_path / "b"])
    (tmp_path / "b" / "r.dcm").write_bytes(b"One")
    assert content_sha256([tmp_path / "a"]) != content_sha256([tmp_path / "b"])


def test_prefetch_overlaps_loading_with_prediction(tmp_path: Path) -> None:
    cases = [CaseInput(f"c{i}", content_sha256=f"h{i}") for i in range(6)]
    spans: dict[str, list[tuple[float, float]]] = {"load": [], "predict": []}
    main = threading.get_ident()

    def slow_load(case: CaseInput) -> int:
        assert threading.get_ident() != main, "load_fn must run in a background thread"
        t = time.perf_counter()
        time.sleep(0.15)
        spans["load"].append((t, time.perf_counter()))
        return 1

    def slow_predict(case: CaseInput, _: int) -> CaseOutputs:
        t = time.perf_counter()
        time.sleep(0.15)
        spans["predict"].append((t, time.perf_counter()))
        return CaseOutputs(probabilities={"positive": 0.25})

    t0 = time.perf_counter()
    report = _run(cases, tmp_path, slow_predict, load_fn=slow_load, writers=[], prefetch=2)
    elapsed = time.perf_counter() - t0
    assert report.done == 6
    overlapping = [
        (a, b) for a in spans["load"] for b in spans["predict"] if min(a[1], b[1]) - max(a[0], b[0]) > 0.05
    ]
    assert len(overlapping) >= 3, "the next cases were not loaded while the model ran"
    assert elapsed < 6 * 0.3, f"no overlap: {elapsed:.2f}s for 6 x (0.15 load + 0.15 predict)"
    with open(report.summary_csv, newline="") as fh:
        assert next(csv.DictReader(fh))["probability:positive"] == "0.25"


def test_qc_flags(tmp_path: Path) -> None:
    cases = _make_cases(tmp_path / "in", 2)

    def predict(case: CaseInput, vol: Volume) -> CaseOutputs:
        mask = np.zeros(vol.shape, np.uint8) if case.case_id == "case-000" else np.ones(vol.shape, np.uint8)
        return CaseOutputs(mask=Volume(mask, vol.affine), labels={1: "lesion"})

    report = _run(cases, tmp_path / "out", predict, writers=[], qc=QcLimits(max_volume_ml=1.0))
    assert [r["qc_flags"] for r in report.rows] == [["empty_mask"], ["implausible_volume:lesion"]]


def test_shards_partition_the_cohort(tmp_path: Path) -> None:
    cases = [CaseInput(f"c{i:02d}", content_sha256=str(i)) for i in range(11)]
    parts = [shard_cases(cases, (i, 3)) for i in range(3)]
    ids = sorted(c.case_id for part in parts for c in part)
    assert ids == sorted(c.case_id for c in cases)
    assert [c.case_id for c in shard_cases(cases[::-1], (1, 3))] == [c.case_id for c in parts[1]]
    assert parse_shard("2/3") == (2, 3)
    for text in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(text)
    with pytest.raises(ConfigError, match="unique"):
        shard_cases([cases[0], cases[0]], None)
    # Shards run into one folder and see each other's ledgers.
    for i in range(3):
        report = _run(
            cases, tmp_path, lambda c, x: CaseOutputs(), load_fn=lambda c: None, writers=[], shard=(i, 3)
        )
        assert report.done == len(parts[i])
    assert len(Ledger(tmp_path).latest()) == 11
    with open(merge_summaries(tmp_path), newline="") as fh:
        merged = list(csv.DictReader(fh))
    assert [r["case_id"] for r in merged] == sorted(c.case_id for c in cases)
    assert {r["status"] for r in merged} == {"done"}


def test_ledger_ignores_a_torn_last_line(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.append({"key": "k1", "case_id": "c1", "status": "done", "outputs": []})
    with open(ledger.path, "ab") as fh:
        fh.write(b'{"key": "k2", "case_id": "c2", "sta')
    assert list(ledger.latest()) == [("c1", "k1")]
    assert ledger.is_done("c1", "k1") and not ledger.is_done("c2", "k2") and not ledger.is_done("c2", "k1")
    Ledger(tmp_path).append({"key": "k3", "case_id": "c3", "status": "done", "outputs": []})
    assert list(Ledger(tmp_path).latest()) == [("c1", "k1"), ("c3", "k3")]


def test_writer_failure_is_recorded_and_progress_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = _make_cases(tmp_path / "in", 3)

    class FlakyWriter:
        name = "flaky"

        def __call__(self, case: CaseInput, outputs: CaseOutputs, case_dir: Path) -> list[Path]:
            if case.case_id == "case-001":
                raise OSError("disk full")
            return []

    report = _run(
        cases, tmp_path / "out", _Predictor(), writers=[NiftiMaskWriter(), FlakyWriter()], progress=True
    )
    assert [r["status"] for r in report.rows] == ["done", "failed", "done"]
    assert report.rows[1]["reason"] == "OSError: disk full" and report.exit_code == 1
    err = capsys.readouterr().err
    assert "3/3" in err and "done=2" in err and "failed=1" in err and "skipped=0" in err
    again = _Predictor()
    report = _run(cases, tmp_path / "out", again)
    assert again.calls == ["case-001"] and report.exit_code == 0


def test_a_new_writer_reruns_done_cases(tmp_path: Path) -> None:
    cases = _make_cases(tmp_path / "in", 2)
    _run(cases, tmp_path / "out", _Predictor())

    class TextWriter:
        name = "text"

        def __call__(self, case: CaseInput, outputs: CaseOutputs, case_dir: Path) -> list[Path]:
            return [atomic_write_text(case_dir / "n.txt", str(int(outputs.mask.data.sum())))]

    again = _Predictor()
    report = _run(cases, tmp_path / "out", again, writers=[NiftiMaskWriter(), TextWriter()])
    assert report.done == 2 and len(again.calls) == 2
    assert (tmp_path / "out/cases/case-001/n.txt").read_text() == "36"
    assert _run(cases, tmp_path / "out", _Predictor()).skipped == 2  # fewer writers: nothing to do
