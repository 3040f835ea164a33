"""Resumable cohort inference: the model is loaded once, I/O overlaps compute, nothing is lost.

Three stages run at the same time:

1. a thread pool hashes each case's input (its key) and runs ``load_fn`` (read +
   preprocess) ``prefetch`` cases ahead of the predictor;
2. the calling thread runs ``predict_fn`` (the model, loaded once by the caller);
3. a writer thread runs the output writers, writes the per-case JSON and only then
   appends ``done`` to the fsync'd ledger.

A case whose key is ``done`` in the ledger with all its outputs present is skipped,
so a run killed at any moment (even SIGKILL) is resumed by running it again. A case
that fails (unreadable, wrong modality, out of memory, a writer error) is recorded
with its reason and the run goes on. See ``docs/cohort.md``.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medimg.errors import EXIT_OK, EXIT_SOME_FAILED, find_medimg_error
from medimg.inference.cases import (
    CaseInput,
    CaseOutputs,
    SetAside,
    SetAsideError,
    case_dir,
    case_key,
    check_case_folders,
    label_volumes_ml,
    remove_partial_files,
    shard_cases,
)
from medimg.inference.cohort_summary import QcLimits, qc_flags, write_summary_csv
from medimg.inference.ledger import Ledger
from medimg.inference.writers import Writer
from medimg.io.atomic import atomic_write_text

log = logging.getLogger(__name__)


class _StatusCount:
    """A :class:`CohortReport` attribute: how many of its rows have the status it is named after."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.status = name

    def __get__(self, report: CohortReport, owner: type | None = None) -> int:
        return report.count(self.status)


@dataclass
class CohortReport:
    """Result of :func:`run_cohort`: counts, per-case rows and the summary CSV path."""

    out_dir: Path
    summary_csv: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r["status"] == status)

    # the counts of each status; set_aside: objects set aside on purpose (localizers, derived,
    # secondary captures, non-image); unreadable: files under an input folder that are not
    # readable DICOM (listed, not counted as failures)
    done = _StatusCount()
    skipped = _StatusCount()
    failed = _StatusCount()
    set_aside = _StatusCount()
    unreadable = _StatusCount()

    @property
    def exit_code(self) -> int:
        """0 when no case failed, else 1 (``EXIT_SOME_FAILED``): never the count, which a shell
        truncates modulo 256 and which would read as a usage (2) or input (3) error."""
        return EXIT_SOME_FAILED if self.failed else EXIT_OK


@dataclass
class _Prepared:
    case: CaseInput
    key: str | None = None
    data: Any = None
    skipped_entry: dict[str, Any] | None = None
    error: str | None = None
    set_aside: str | None = None  # the kind, when load_fn found the case is not one
    load_s: float = 0.0


def _reason(exc: BaseException) -> str:
    """``Type: message`` of the error, or of the error it wraps when that says more.

    MONAI wraps whatever a transform raised in ``RuntimeError: applying transform <...>``;
    the reason shown is the medimg error in the chain (it names the file and what was
    expected), else the innermost error under MONAI's wrapper.
    """
    shown: BaseException | None = find_medimg_error(exc)
    if shown is None and str(exc).startswith("applying transform"):
        seen, shown = {id(exc)}, exc  # the innermost error under MONAI's wrapper
        while (inner := shown.__cause__ or shown.__context__) is not None and id(inner) not in seen:
            seen.add(id(inner))
            shown = inner
    shown = shown or exc
    return " ".join(f"{type(shown).__name__}: {shown}".split())[:500]


def _set_aside_rows(set_aside: Sequence[SetAside], shard: tuple[int, int] | None) -> list[dict[str, Any]]:
    """Summary rows of the objects set aside (in shard 0 only, so merged shards list them once)."""
    if shard is not None and shard[0] != 0:
        return []
    return [
        {"case_id": s.case_id, "key": "", "status": s.status, "reason": f"{s.kind}: {s.reason}"}
        for s in set_aside
    ]


def settings_hash(settings: dict[str, Any]) -> str:
    """The sha256 of ``settings`` as canonical JSON (sorted keys): a cohort's ``settings_key``.

    Example:
        >>> settings_hash({"b": 1, "a": 2}) == settings_hash({"a": 2, "b": 1})
        True
    """
    import hashlib

    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def cases_table(
    out: Path,
    case_ids: Sequence[str],
    names: tuple[str, str],
    columns: Sequence[str],
    rows: Callable[[str, Any], list[dict[str, Any]]],
) -> Path:
    """A cohort's table: every done case's ``cases/<case>/<json>`` (``names``: the JSON's and the
    table's file names) as ``rows(case_id, document)``, in one CSV ``out/<table>`` with ``columns``,
    written atomically.
    """
    import pandas as pd

    json_name, table_name = names
    found: list[dict[str, Any]] = []
    for case_id in case_ids:
        path = out / "cases" / case_id / json_name
        if path.is_file():
            found += rows(case_id, json.loads(path.read_text()))
    return atomic_write_text(out / table_name, pd.DataFrame(found, columns=list(columns)).to_csv(index=False))


def run_cohort(
    cases: Sequence[CaseInput],
    predict_fn: Callable[[CaseInput, Any], CaseOutputs],
    out_dir: Path,
    *,
    load_fn: Callable[[CaseInput], Any],
    writers: Sequence[Writer],
    model_key: str,
    settings_key: str,
    prefetch: int = 2,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    qc: QcLimits | None = None,
    set_aside: Sequence[SetAside] = (),
) -> CohortReport:
    """Run ``predict_fn`` over ``cases`` with prefetching, background writes and a ledger.

    Args:
        cases: the cohort (unique, pseudonymous ``case_id``\\ s).
        predict_fn: ``(case, loaded) -> CaseOutputs``; the model lives in its closure.
        out_dir: outputs go to ``out_dir/cases/<case_id>/``; ledger and summary CSV at the top.
        load_fn: ``case -> loaded`` (read + preprocess), run in background threads.
        writers: output writers (e.g. NIfTI, DICOM SEG, DICOM SR), run in order.
        model_key: identifies the model (e.g. weights sha256); part of each case key.
        settings_key: identifies the inference settings (e.g. their hash); part of the key.
        prefetch: how many cases are loaded ahead of the predictor.
        progress: show a tqdm bar with ETA and done/skipped/failed counts.
        shard: ``(i, n)`` runs only shard ``i`` of ``n`` (see :func:`shard_cases`).
        qc: limits for the implausible-volume QC flag.
        set_aside: input objects that are not cases (localizers, non-image objects, broken
            series), listed in the summary with their reason; broken series count as failed.

    Returns:
        A :class:`CohortReport`; ``exit_code`` is non-zero when any case failed.

    Example:
        >>> model = load_model(...)  # doctest: +SKIP
        >>> report = run_cohort(cases, lambda c, x: segment(model, x), Path("out"),
        ...                     load_fn=load_case, writers=[NiftiMaskWriter()],
        ...                     model_key=weights_sha, settings_key=settings_hash)  # doctest: +SKIP
        >>> raise SystemExit(report.exit_code)  # doctest: +SKIP
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_case_folders(cases)
    cases = shard_cases(cases, shard)
    run = _CohortRun.start(out_dir, writers, model_key, settings_key, qc or QcLimits(), shard)
    run.open_bar(len(cases), progress)
    run.run_cases(cases, predict_fn, load_fn, prefetch)
    return _cohort_report(run, cases, set_aside, shard, start)


@dataclass
class _CohortRun:
    """One run's shared state: output settings, the ledger, the rows so far and the progress bar."""

    out_dir: Path
    writers: Sequence[Writer]
    model_key: str
    settings_key: str
    limits: QcLimits
    ledger: Ledger
    latest: Any
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    bar: Any = None

    @classmethod
    def start(
        cls,
        out_dir: Path,
        writers: Sequence[Writer],
        model_key: str,
        settings_key: str,
        limits: QcLimits,
        shard: tuple[int, int] | None,
    ) -> _CohortRun:
        """Open the (shard's) ledger and read its latest entries."""
        ledger = Ledger(out_dir, shard)
        return cls(out_dir, writers, model_key, settings_key, limits, ledger, ledger.latest())

    def open_bar(self, total: int, progress: bool) -> None:
        """The tqdm bar with ETA and done/skipped/failed counts (disabled without ``progress``)."""
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, disable=not progress, unit="case", file=sys.stderr, dynamic_ncols=True)

    def finish(self, row: dict[str, Any]) -> None:
        with self.lock:
            self.rows[row["case_id"]] = row
            statuses = [r["status"] for r in self.rows.values()]
            self.bar.set_postfix(
                done=statuses.count("done"),
                skipped=statuses.count("skipped"),
                failed=statuses.count("failed"),
            )
            self.bar.update(1)

    def fail(self, prep: _Prepared, reason: str, timings: dict[str, float]) -> None:
        status = "set_aside" if prep.set_aside else "failed"
        log.warning("case %s %s: %s", prep.case.case_id, status.replace("_", " "), reason)
        row: dict[str, Any] = {
            "case_id": prep.case.case_id,
            "key": prep.key,
            "status": status,
            "reason": f"{prep.set_aside}: {reason}" if prep.set_aside else reason,
        }
        row.update(timings=timings, volumes_ml={}, probabilities={}, qc_flags=[])
        try:
            _write_case_json(self.out_dir, prep.case, row, self.model_key, self.settings_key)
        except Exception as exc:  # the ledger line below still records the failure
            log.warning("case %s: cannot write case.json (%s)", prep.case.case_id, _reason(exc))
        self.ledger.append({k: row[k] for k in ("case_id", "key", "status", "reason")})
        self.finish(row)

    def prepare(self, case: CaseInput, load_fn: Callable[[CaseInput], Any]) -> _Prepared:
        prep = _Prepared(case)
        t0 = time.perf_counter()
        try:
            prep.key = case_key(case, self.model_key, self.settings_key)
            entry = self.latest.get((case.case_id, prep.key)) or {}
            # Done, outputs present in this case's own folder, and written by (at least) the
            # writers asked for now.
            if (
                self.ledger.is_done(case.case_id, prep.key, self.latest)
                and {w.name for w in self.writers} <= set(entry.get("writers", ()))
                and _outputs_in(entry, self.out_dir, case)
            ):
                prep.skipped_entry = entry
                return prep
            remove_partial_files(case_dir(self.out_dir, case))
            prep.data = load_fn(case)
        except SetAsideError as exc:
            prep.error, prep.set_aside = str(exc), exc.kind
        except Exception as exc:
            prep.error = _reason(exc)
        prep.load_s = time.perf_counter() - t0
        return prep

    def write_loop(self, write_queue: queue.Queue[tuple[_Prepared, CaseOutputs, float] | None]) -> None:
        while (item := write_queue.get()) is not None:
            prep, outputs, predict_s = item
            t0 = time.perf_counter()
            timings = {"load_s": round(prep.load_s, 4), "predict_s": round(predict_s, 4)}
            try:
                row = _write_case(
                    self.out_dir, prep, outputs, self.writers, self.limits,
                    self.model_key, self.settings_key, timings, t0,
                )  # fmt: skip
                self.ledger.append({k: row[k] for k in _LEDGER_DONE_KEYS})
                self.finish(row)
            except Exception as exc:
                timings["write_s"] = round(time.perf_counter() - t0, 4)
                self.fail(prep, _reason(exc), timings)

    def run_cases(
        self,
        cases: Sequence[CaseInput],
        predict_fn: Callable[[CaseInput, Any], CaseOutputs],
        load_fn: Callable[[CaseInput], Any],
        prefetch: int,
    ) -> None:
        """Load ahead in a thread pool, predict here, write in a background thread."""
        write_queue: queue.Queue[tuple[_Prepared, CaseOutputs, float] | None] = queue.Queue(
            maxsize=max(1, prefetch)
        )
        writer_thread = threading.Thread(
            target=self.write_loop, args=(write_queue,), name="medimg-cohort-writer", daemon=True
        )
        writer_thread.start()
        try:
            with ThreadPoolExecutor(max_workers=max(1, prefetch), thread_name_prefix="medimg-load") as pool:
                for prep in self._prefetched(pool, cases, load_fn, prefetch):
                    self.predict_one(prep, predict_fn, write_queue)
        finally:
            write_queue.put(None)
            writer_thread.join()
            self.bar.close()

    def _prefetched(
        self,
        pool: ThreadPoolExecutor,
        cases: Sequence[CaseInput],
        load_fn: Callable[[CaseInput], Any],
        prefetch: int,
    ) -> Iterator[_Prepared]:
        """Prepared cases in order, with up to ``prefetch`` loads running ahead."""
        pending: deque[Future[_Prepared]] = deque()
        remaining = iter(cases)

        def refill() -> None:
            while len(pending) < max(1, prefetch) and (case := next(remaining, None)) is not None:
                pending.append(pool.submit(self.prepare, case, load_fn))

        refill()
        while pending:
            prep = pending.popleft().result()
            refill()
            yield prep

    def predict_one(
        self,
        prep: _Prepared,
        predict_fn: Callable[[CaseInput, Any], CaseOutputs],
        write_queue: queue.Queue[tuple[_Prepared, CaseOutputs, float] | None],
    ) -> None:
        """Skip, fail or predict one prepared case; predictions are queued for the writer."""
        if prep.skipped_entry is not None:
            self.finish({**prep.skipped_entry, "status": "skipped", "reason": ""})
            return
        if prep.error is not None:
            self.fail(prep, prep.error, {"load_s": round(prep.load_s, 4)})
            return
        t0 = time.perf_counter()
        try:
            outputs = predict_fn(prep.case, prep.data)
        except Exception as exc:
            _release_accelerator_memory(exc)
            self.fail(prep, _reason(exc), {"load_s": round(prep.load_s, 4)})
            return
        finally:
            prep.data = None
        write_queue.put((prep, outputs, time.perf_counter() - t0))


def _cohort_report(
    run: _CohortRun,
    cases: Sequence[CaseInput],
    set_aside: Sequence[SetAside],
    shard: tuple[int, int] | None,
    start: float,
) -> CohortReport:
    """Write the summary CSV (cases in input order, then the objects set aside) and log the counts."""
    out_dir = run.out_dir
    ordered = [run.rows[c.case_id] for c in cases if c.case_id in run.rows] + _set_aside_rows(
        set_aside, shard
    )
    summary = out_dir / ("cohort.csv" if shard is None else f"cohort-{shard[0]}of{shard[1]}.csv")
    write_summary_csv(summary, ordered)
    report = CohortReport(out_dir, summary, ordered, time.perf_counter() - start)
    log.info(
        "cohort: %d done, %d skipped, %d failed, %d set aside",
        report.done, report.skipped, report.failed, report.set_aside,
    )  # fmt: skip
    return report


def _outputs_in(entry: dict[str, Any], out_dir: Path, case: CaseInput) -> bool:
    """True when every output a ledger entry lists lies in the case's own folder.

    Outputs written elsewhere (e.g. by a version that gave two case ids one folder)
    are not this case's: it is computed again.
    """
    folder = case_dir(out_dir, case).relative_to(out_dir).as_posix() + "/"
    return all(str(rel).replace("\\", "/").startswith(folder) for rel in entry.get("outputs", ()))


_LEDGER_DONE_KEYS = (
    "case_id",
    "key",
    "status",
    "reason",
    "outputs",
    "volumes_ml",
    "probabilities",
    "qc_flags",
    "timings",
    "writers",
)


def _write_case(
    out_dir: Path,
    prep: _Prepared,
    outputs: CaseOutputs,
    writers: Sequence[Writer],
    limits: QcLimits,
    model_key: str,
    settings_key: str,
    timings: dict[str, float],
    t0: float,
) -> dict[str, Any]:
    """Run every writer, then the per-case JSON; return the summary row of a done case."""
    folder = case_dir(out_dir, prep.case)
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for writer in writers:
        paths.extend(Path(p) for p in writer(prep.case, outputs, folder))
    volumes = label_volumes_ml(outputs.mask, outputs.labels) if outputs.mask is not None else {}
    timings["write_s"] = round(time.perf_counter() - t0, 4)
    row: dict[str, Any] = {
        "case_id": prep.case.case_id,
        "key": prep.key,
        "status": "done",
        "reason": "",
        "volumes_ml": volumes,
        "probabilities": {k: float(v) for k, v in outputs.probabilities.items()},
        "qc_flags": qc_flags(outputs, volumes, limits),
        "timings": timings,
        "writers": [w.name for w in writers],
        "extra": outputs.extra,
    }
    json_path = _write_case_json(
        out_dir, prep.case, {**row, "outputs": [p.name for p in paths]}, model_key, settings_key
    )
    row["outputs"] = [str(p.resolve().relative_to(out_dir.resolve())) for p in [*paths, json_path]]
    return row


def _write_case_json(
    out_dir: Path, case: CaseInput, row: dict[str, Any], model_key: str, settings_key: str
) -> Path:
    document = {**row, "model_key": model_key, "settings_key": settings_key}
    path = case_dir(out_dir, case) / "case.json"
    return atomic_write_text(path, json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")


def _release_accelerator_memory(exc: BaseException) -> None:
    """After an out-of-memory error, give cached device memory back before the next case."""
    if "OutOfMemory" not in type(exc).__name__ or "torch" not in sys.modules:
        return
    torch = sys.modules["torch"]
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
