"""What the track stage does beside the data caching and the first training steps, and how the run waits for it.

Two pieces of the track stage need not hold up the first training step:

- opening the MLflow store (importing MLflow's SQLAlchemy store, about 1.5 s of CPU, and for a
  new SQLite file copying the schema template, :func:`medimg.training.tracking.seed_new_store`):
  :func:`warm_store` starts it in a thread while the plan stage caches the datasets; the track
  stage waits for it before it creates the run. It creates no run and no experiment, so a case
  the plan refuses still stops the study before anything is tracked.

Both threads are kept on measurement (``python -m benchmarks.profile_startup``, 2026-12-03
23:12-23:21 UTC, 2 cores at load average 6-9): 1,000 cases, first step 8.8 s with them against
9.9 s without (medians of 2 rounds, the same CPU time: 6.8 and 6.6 s); 100 cases, 6.5 against
6.3 s (no gain, no loss beyond the rounds' spread).
- recording the lineage (parameters, tags, manifest and file hashes, environment, ``pip freeze``,
  artifacts, datasets): :class:`Background` runs it after ``run.json`` names the run; the fit waits
  for it before the first checkpoint is written (:class:`WaitBeforeCheckpoint`) and the study
  before it exports anything. Its error fails the run, naming what failed and why.
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
    """Import MLflow and open the tracking store at ``uri`` in a thread (a new SQLite file: made from the template).

    Only a local SQLite store is opened; for a server only the imports are done, so nothing is
    sent before the run starts. A failure here is only logged: the track stage opens the store
    again in the foreground, where the same error is raised with its full context.
    """

    def _open() -> None:
        from medimg.training.tracking import open_store

        try:
            open_store(uri)
        except Exception as exc:  # the track stage raises it again, in the foreground
            log.debug("opening the MLflow store %s beside the caching failed: %s", uri, exc)

    return Background("opening the MLflow store", _open)
