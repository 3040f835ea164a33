"""A wall-clock training budget (``trainer.max_time``) that the schedule and validation fit into.

Lightning's ``Trainer(max_time=...)`` stops training when the budget is spent, but the
learning-rate schedule was sized in epochs, so a run cut by time ends mid-schedule (at a high
learning rate) and a run with time to spare ends its schedule early. :class:`TimeBudget`
closes that gap by measuring:

1. After ``probe_steps`` optimiser steps, and again after every later step, it computes the
   seconds per training step (wall time less the time spent in validation, over the steps
   taken since the first ``probe_steps``, which warm up) and the seconds per validation (the
   median of the last three; before the first one, half a training step per validation case).
   The warm-up of the schedule is cut to a tenth of its length at most.
2. Validation cadence: every ``n`` epochs, the smallest ``n`` (at least
   ``trainer.val_every_n_epochs``) for which validation costs at most ``val_share`` of the
   training time.
3. Schedule length: ``total_steps`` of the warm-up/cosine factor
   (:class:`medimg.training.optim.WarmupCosine`) becomes the steps taken plus the steps that
   fit into the time left, at the measured cost of a step plus its share of validation, after a
   reserve: one validation (the final one), one step and ``reserve`` of the budget (checkpoint
   writes).
4. When the step count reaches ``total_steps`` the schedule is complete (learning rate at its
   minimum): it asks for a last validation and stops. Lightning's ``Timer`` (from
   ``max_time``) stays as the hard limit. A step that ends past the budget, or with less than
   one more step's time left, stops training without another validation and ends the schedule
   at that step (when the machine slowed down, the estimate was a few steps long: in one CI
   run 351 of 358 planned steps fit), so a slow machine overruns by one step and a checkpoint
   write at most and the weights still end at the schedule's minimum rate.

Resume keeps the remaining budget: Lightning's ``Timer`` saves the elapsed training time in
every checkpoint and counts on from it, and the schedule's ``total_steps`` is saved with the
learning-rate scheduler. The time between the last checkpoint and a kill is not counted (it is
lost work, redone after the resume).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from lightning.pytorch.callbacks import Callback, Timer

from medimg.training.optim import WarmupCosine

log = logging.getLogger(__name__)
NEVER = 2**31 - 1  # a validation cadence no epoch reaches


class TimeBudget(Callback):
    """Fit the learning-rate schedule and validation cadence to ``budget_s`` seconds of training.

    Args:
        budget_s: the budget (``trainer.max_time`` in seconds); the trainer must have the same
            ``max_time`` (its ``Timer`` measures the elapsed time, resume included).
        min_val_every: validation at most this often (``trainer.val_every_n_epochs``).
        probe_steps: steps measured before the first estimate.
        val_share: largest share of the training time validation may take.
        reserve: share of the budget kept free for checkpoint writes at the end.

    Example:
        >>> cb = TimeBudget(1200.0)
        >>> pl.Trainer(max_time={"seconds": 1200}, callbacks=[cb])  # doctest: +SKIP
    """

    def __init__(
        self,
        budget_s: float,
        min_val_every: int = 1,
        probe_steps: int = 3,
        val_share: float = 0.1,
        reserve: float = 0.02,
    ) -> None:
        self.budget_s = float(budget_s)
        self.min_val_every = max(1, int(min_val_every))
        self.probe_steps = max(1, int(probe_steps))
        self.val_share = float(val_share)
        self.reserve = float(reserve)
        self.total_steps: int | None = None
        self.step_s: float | None = None
        self.val_every = self.min_val_every
        self._start = 0.0
        self._start_step = 0
        self._val_started: float | None = None
        self._mark: tuple[float, int, float] | None = None
        self._val_times: list[float] = []

    def _timer(self, trainer: Any) -> Timer:
        for cb in trainer.callbacks:
            if isinstance(cb, Timer):
                return cb
        raise RuntimeError(
            "TimeBudget needs the trainer's max_time (Lightning's Timer) to measure the budget"
        )

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._start, self._start_step, self._mark = time.monotonic(), trainer.global_step, None
        remaining = self._timer(trainer).time_remaining()
        log.info(
            "time budget %.0f s, %.0f s left at step %d", self.budget_s, remaining or 0, trainer.global_step
        )
        _log_metrics(trainer, {"budget_s": self.budget_s, "budget_remaining_s": float(remaining or 0.0)})

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._val_started = time.monotonic()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self._val_started is not None:
            self._val_times.append(time.monotonic() - self._val_started)
            self._val_started = None

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._end_if_spent(trainer):
            return
        steps = trainer.global_step - self._start_step
        if steps < self.probe_steps:
            return
        if self._mark is None:  # the first steps (warm-up, first allocations) are not measured
            self._mark = (time.monotonic(), trainer.global_step, sum(self._val_times))
        self._replan(trainer, steps)
        if (
            self.total_steps is not None
            and trainer.global_step >= self.total_steps
            and not trainer.should_stop
        ):
            log.info(
                "time budget: schedule complete at step %d with %.1f s left (a step %.2f s, a validation %.2f s)",
                trainer.global_step, self._timer(trainer).time_remaining() or 0.0, self.step_s or 0.0,
                self._val_mean(),
            )  # fmt: skip
            trainer.check_val_every_n_epoch = 1  # validate the final weights, then stop
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._end_if_spent(trainer)  # a validation at the epoch's end may have spent the budget

    def _end_if_spent(self, trainer: Any) -> bool:
        """Stop when the budget is spent or another step would overrun it; the schedule ends here.

        The weights were last trained at the schedule's minimum rate only if the schedule ends at
        this step, so its length is cut to the step count; no validation follows.
        """
        if (self._timer(trainer).time_remaining() or 0.0) > (self.step_s or 0.0):
            return False
        trainer.check_val_every_n_epoch = NEVER
        trainer.should_stop = True
        if self.total_steps is not None and trainer.global_step < self.total_steps:
            log.info(
                "time budget: spent at step %d, %d steps before the planned end; the schedule ends here",
                trainer.global_step, self.total_steps - trainer.global_step,
            )  # fmt: skip
            self.total_steps = trainer.global_step
            _set_schedule_length(trainer, max(1, trainer.global_step))
        return True

    def _val_mean(self) -> float:
        """Seconds of one validation: the median of the last three (the first one warms up)."""
        recent = sorted(self._val_times[-3:])
        return recent[len(recent) // 2] if recent else 0.0

    def _val_guess(self, trainer: Any) -> float:
        """Before the first validation: half a training step per validation case (forward only).

        On MSD Hippocampus (26 validation cases, the patch covering a case) a full training step
        per case guessed 78 s for a validation that took about 21 s.
        """
        batches = getattr(trainer, "num_val_batches", None) or [0]
        n = sum(b for b in batches if isinstance(b, int | float) and not math.isinf(b))
        return 0.5 * float(n) * (self.step_s or 0.0)

    def _replan(self, trainer: Any, steps: int) -> None:
        """Re-estimate the step cost, the validation cadence and the schedule's length."""
        now = time.monotonic()
        val_total = sum(self._val_times)
        since, step0, val0 = self._mark or (self._start, self._start_step, 0.0)
        if trainer.global_step - step0 >= self.probe_steps:  # steps after the warm-up ones
            self.step_s = max(1e-6, (now - since - (val_total - val0)) / (trainer.global_step - step0))
        else:
            self.step_s = max(1e-6, (now - self._start - val_total) / steps)
        measured = self._val_mean()
        val_each = measured or self._val_guess(trainer)
        per_epoch = max(1, _steps_per_epoch(trainer))
        if measured > 0:
            self.val_every = max(
                self.min_val_every, math.ceil(val_each / (self.val_share * per_epoch * self.step_s))
            )
            trainer.check_val_every_n_epoch = self.val_every
        cost = self.step_s + val_each / (per_epoch * self.val_every)
        # kept back: one validation (the final one), one step and ``reserve`` of the budget (the last
        # checkpoint writes)
        held = val_each + self.step_s + self.reserve * self.budget_s
        left = (self._timer(trainer).time_remaining() or 0.0) - held
        total = trainer.global_step + max(0, int(left / cost))
        total = int(trainer.strategy.broadcast(total, src=0))  # every rank stops at the same step
        self.total_steps = total
        _set_schedule_length(trainer, max(1, total))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        elapsed = self._timer(trainer).time_elapsed()
        metrics = {"budget_elapsed_s": float(elapsed), "budget_val_every_n_epochs": float(self.val_every)}
        if self.total_steps is not None:
            metrics["budget_schedule_steps"] = float(self.total_steps)
        if self.step_s is not None:
            metrics["budget_step_s"] = float(self.step_s)
        log.info(
            "time budget: trained %.1f s of %.0f s; schedule %s steps (at step %d); validation every %d epoch(s)",
            elapsed, self.budget_s, self.total_steps, trainer.global_step, self.val_every,
        )  # fmt: skip
        _log_metrics(trainer, metrics)


def _steps_per_epoch(trainer: Any) -> int:
    """Optimiser steps per epoch (training batches over gradient accumulation)."""
    batches = trainer.num_training_batches
    if not isinstance(batches, int | float) or math.isinf(batches):
        return 1
    return max(1, int(batches) // max(1, int(trainer.accumulate_grad_batches)))


def _set_schedule_length(trainer: Any, total: int) -> None:
    """Set ``total_steps`` of every warm-up/cosine factor and apply the rate it gives now.

    Lightning steps the scheduler before ``on_train_batch_end``, so the rate for the next step
    was computed with the old length; it is recomputed here (and is the schedule's minimum
    once the step count reaches ``total``).
    """
    for config in trainer.lr_scheduler_configs:
        sched = config.scheduler
        factors = getattr(sched, "lr_lambdas", [])
        if not factors or not all(isinstance(f, WarmupCosine) for f in factors):
            continue
        for factor in factors:
            factor.total_steps = total
            factor.warmup_steps = min(factor.warmup_steps, total // 10)  # a short budget: short warm-up
        groups = sched.optimizer.param_groups
        for group, base, factor in zip(groups, sched.base_lrs, factors, strict=True):
            group["lr"] = base * factor(sched.last_epoch)
        sched._last_lr = [group["lr"] for group in groups]


def _log_metrics(trainer: Any, metrics: dict[str, float]) -> None:
    """Log to the run's logger (MLflow) from rank zero, at the current step."""
    if trainer.logger is not None and trainer.is_global_zero:
        trainer.logger.log_metrics(metrics, step=trainer.global_step)
