"""What the track stage does beside the data caching and the first training steps, and how the run waits for it.

Recording the lineage (parameters, tags, manifest and file hashes, environment, ``pip freeze``,
artifacts, datasets) need not hold up the first training step: :class:`Background` runs it after
``run.json`` names the run; the fit waits for it before the first checkpoint is written
(:class:`WaitBeforeCheckpoint`) and the study before it exports anything. Its error fails the run,
naming what failed and why.

The MLflow store is opened in the track stage itself (importing MLflow's SQLAlchemy store, about
1.5 s of CPU; a new SQLite file is a copy of the schema template,
:func:`medimg.training.tracking.seed_new_store`). Opened in a thread beside the plan stage's
caching, that import held the GIL the caching needs: ``python -m benchmarks.profile_startup``
(2026-12-03, 2 cores, load average 1.4-3.4, medians of 3 rounds) reached the first step at 1,000
cases in 6.0 s with that thread, 5.6 s without it (the lineage thread kept), 6.8 s with neither;
at 100 cases 2.9, 2.8 and 2.9 s. A later run (2 rounds, load 1.2-3.4): 5.5 s with it, 5.6 s
without. Once new stores are copied from the template the thread buys nothing measurable, and it
competes with the caching for the GIL. Only a missing schema template (the first study with this
MLflow) is made beside the caching (:func:`warm_store`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl

log = logging.getLogger(__name__)


class BackgroundError(RuntimeError):
    """Work the run did beside training failed; the message names the work and its reason."""


class Background:
    """``fn`` running in a thread (which the interpreter waits for at exit); :meth:`wait` joins it and raises its error.

    Example:
        >>> job = Background("the lineage", lambda: None)
        >>> job.wait()
        >>> job.done, job.seconds is not None
        (True, True)
    """

    def __init__(self, what: str, fn: Callable[[], Any]) -> None:
        self.what = what
        self.seconds: float | None = None  # how long ``fn`` ran, once it ended
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), name=f"medimg: {what}")
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        t0 = time.perf_counter()
        try:
            fn()
        except BaseException as exc:  # kept for wait(), which raises it in the run's thread
            self.error = exc
        finally:
            self.seconds = time.perf_counter() - t0

    @property
    def done(self) -> bool:
        """Whether ``fn`` has ended (successfully or not)."""
        return not self._thread.is_alive()

    def wait(self) -> None:
        """Block until ``fn`` ends; raise :class:`BackgroundError` (from its error) when it failed.

        Raises every time it is called after a failure, so no caller can miss it.
        """
        self._thread.join()
        if self.error is not None:
            reason = f"{type(self.error).__name__}: {self.error}"
            raise BackgroundError(f"{self.what} could not be recorded: {reason}") from self.error


class WaitBeforeCheckpoint(pl.Callback):
    """Holds the first checkpoint until ``job`` has ended; its error fails the fit before anything is saved.

    A checkpoint is what ``--resume`` continues from, so none is written before the run's lineage
    is complete. ``job`` may be ``None`` (nothing to wait for: another rank, a synchronous track).
    """

    def __init__(self, job: Background | None) -> None:
        self.job = job

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        if self.job is not None:
            self.job.wait()


def warm_store(uri: str) -> Background:
    """Beside the caching, make the schema template a new SQLite store at ``uri`` will be copied from, if missing.

    That happens once per installed MLflow version (MLflow's migrations, :func:`schema_template`);
    otherwise the job does nothing, and the track stage opens the store. Nothing is created in the
    store, so a case the plan refuses still stops the study before anything is tracked. A failure
    here is only logged: the track stage opens the store in the foreground, where MLflow creates
    the schema itself if the template cannot be had.

    Example:
        >>> warm_store("http://tracking.example:5000").what
        'nothing to prepare'
    """
    from medimg.training.tracking import schema_template, template_missing

    if not template_missing(uri):
        return Background("nothing to prepare", lambda: None)

    def _make() -> None:
        try:
            schema_template()
        except Exception as exc:  # the track stage opens the store in the foreground
            log.debug("making the MLflow schema template beside the caching failed: %s", exc)

    return Background("making the MLflow schema template", _make)
