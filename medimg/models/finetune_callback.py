"""Lightning callback that runs a :class:`~medimg.config.weights.FinetuneSpec` and makes it visible.

Built on Lightning's :class:`~lightning.pytorch.callbacks.BaseFinetuning`:
``freeze_before_training`` freezes the encoder before the optimizer is built and
``finetune_function`` unfreezes it at the start of an epoch.

* Epochs ``0 .. freeze_encoder_epochs-1``: encoder frozen; at epoch ``freeze_encoder_epochs``
  it is unfrozen by turning ``requires_grad`` back on. The optimizer already holds the
  encoder in its own named group (:func:`medimg.models.finetune.param_groups`), so no
  parameter group is added, and none is stored in or restored from a checkpoint.
* ``freeze_norm``: the encoder's normalisation layers stay in eval mode with no gradient.
* Every optimizer step logs the learning rate of each named parameter group
  (``lr/encoder``, ``lr/head``) and ``finetune/encoder_frozen`` (1 or 0) to every logger;
  freeze/unfreeze events are also logged as text (and as MLflow tags
  ``finetune.frozen_at_epoch`` / ``finetune.unfrozen_at_epoch`` on an MLflow logger).
"""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.optim import Optimizer

from medimg.config.weights import FinetuneSpec
from medimg.errors import ConfigError
from medimg.models.finetune import set_encoder_frozen, set_norm_frozen
from medimg.models.networks import is_under

log = logging.getLogger(__name__)


class FinetuneScheduler(BaseFinetuning):
    """Freeze, unfreeze and log a fine-tuning schedule.

    Args:
        spec: The fine-tuning settings.
        encoder_prefixes: Parameter-name prefixes of the encoder, relative to the network.
        network_attr: Attribute of the LightningModule holding the network (``"net"``);
            ``None`` when the prefixes are relative to the LightningModule itself.

    Example:
        >>> from medimg.config.weights import FinetuneSpec
        >>> cb = FinetuneScheduler(FinetuneSpec(freeze_encoder_epochs=2), ["features."], network_attr="net")
        >>> cb.events
        []
    """

    def __init__(
        self, spec: FinetuneSpec, encoder_prefixes: list[str], *, network_attr: str | None = "net"
    ) -> None:
        super().__init__()
        self.spec = spec
        self.encoder_prefixes = list(encoder_prefixes)
        self.network_attr = network_attr
        self.frozen = False
        self.events: list[dict] = []

    def _network(self, pl_module: LightningModule) -> nn.Module:
        if self.network_attr is None:
            return pl_module
        network = getattr(pl_module, self.network_attr, None)
        if not isinstance(network, nn.Module):
            raise ConfigError(
                f"FinetuneScheduler: the LightningModule has no network attribute {self.network_attr!r}"
            )
        return network

    def _encoder_modules(self, network: nn.Module) -> list[nn.Module]:
        """The modules under the encoder prefixes; every encoder parameter must belong to one."""
        modules = [m for n, m in network.named_modules() if n and is_under(n + ".", self.encoder_prefixes)]
        covered = {id(p) for m in modules for p in m.parameters(recurse=False)}
        loose = [
            n
            for n, p in network.named_parameters()
            if is_under(n, self.encoder_prefixes) and id(p) not in covered
        ]
        if loose:
            raise ConfigError(
                f"FinetuneScheduler: encoder prefixes {self.encoder_prefixes} name parameters outside any "
                f"encoder module ({loose[:3]}); a prefix must name a module, ending in '.'"
            )
        return modules

    def _event(self, trainer: Trainer, kind: str, epoch: int) -> None:
        event = {"event": kind, "epoch": epoch, "step": trainer.global_step}
        self.events.append(event)
        log.info("fine-tuning: encoder %s at epoch %d (step %d)", kind, epoch, trainer.global_step)
        for logger in trainer.loggers:
            logger.log_metrics({"finetune/encoder_frozen": float(kind == "frozen")}, step=trainer.global_step)
            experiment = getattr(logger, "experiment", None)
            run_id = getattr(logger, "run_id", None)
            if run_id and hasattr(experiment, "set_tag"):
                experiment.set_tag(run_id, f"finetune.{kind}_at_epoch", str(epoch))

    def _event_once(self, trainer: Trainer, kind: str, epoch: int) -> None:
        """Log an event unless this run (restored events included) already has it."""
        if not any(e["event"] == kind for e in self.events):
            self._event(trainer, kind, epoch)

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        """Freeze the encoder before the optimizer is built when the schedule has frozen epochs.

        Gradients only: medimg's own :func:`set_encoder_frozen` is used rather than
        ``BaseFinetuning.freeze``, which either leaves normalisation weights trainable
        (``train_bn=True``) or stops their running statistics (``train_bn=False``, so that
        validation would normalise with batch statistics).
        """
        if self.spec.freeze_encoder_epochs > 0:
            network = self._network(pl_module)
            self._encoder_modules(network)  # a bad prefix fails here, before any training
            set_encoder_frozen(network, self.encoder_prefixes, True)
            self.frozen = True

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Freeze the encoder's norm layers when asked (the epoch is not restored yet on resume)."""
        super().on_fit_start(trainer, pl_module)
        if self.spec.freeze_norm:
            set_norm_frozen(self._network(pl_module), self.encoder_prefixes)

    def finetune_function(self, pl_module: LightningModule, epoch: int, optimizer: Optimizer) -> None:
        """Unfreeze the encoder when the frozen epochs are over (its parameter group is already there)."""
        if not self.frozen or epoch < self.spec.freeze_encoder_epochs:
            return
        network = self._network(pl_module)
        self.make_trainable(self._encoder_modules(network))
        if self.spec.freeze_norm:
            set_norm_frozen(network, self.encoder_prefixes)
        self.frozen = False
        self._event_once(pl_module.trainer, "unfrozen", epoch)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Log the freeze, run :meth:`finetune_function`; keep frozen norm layers in eval mode.

        The freeze is logged here rather than in ``on_fit_start``: only now is the epoch of
        a resumed run restored.
        """
        if self.frozen and trainer.current_epoch < self.spec.freeze_encoder_epochs:
            self._event_once(trainer, "frozen", trainer.current_epoch)
        super().on_train_epoch_start(trainer, pl_module)
        if self.spec.freeze_norm:
            set_norm_frozen(self._network(pl_module), self.encoder_prefixes)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: object, batch_idx: int
    ) -> None:
        """Log the learning rate of every named parameter group at this optimizer step."""
        metrics: dict[str, float] = {"finetune/encoder_frozen": float(self.frozen)}
        for optimizer in trainer.optimizers:
            for index, group in enumerate(optimizer.param_groups):
                metrics[f"lr/{group.get('name', f'group{index}')}"] = float(group["lr"])
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        """Checkpointed state: the events so far (no optimizer groups: none are ever added)."""
        return {"frozen": self.frozen, "events": list(self.events)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the events of :meth:`state_dict`.

        ``BaseFinetuning``'s optimizer-group bookkeeping is neither saved nor restored: the
        groups never change here, and the optimizer's own checkpointed state restores them.
        Whether the encoder is frozen follows from the resumed epoch, not from this state.
        """
        self.events = list(state_dict.get("events", []))
