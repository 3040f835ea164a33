"""Lightning callback that runs a :class:`~medimg.models.spec.FinetuneSpec` and makes it visible.

* Epochs ``0 .. freeze_encoder_epochs-1``: encoder frozen; at epoch ``freeze_encoder_epochs``
  it is unfrozen.
* ``freeze_norm``: the encoder's normalisation layers stay in eval mode with no gradient.
* Every optimizer step logs the learning rate of each named parameter group
  (``lr/encoder``, ``lr/head``) and ``finetune/encoder_frozen`` (1 or 0) to every logger;
  freeze/unfreeze events are also logged as text (and as MLflow tags
  ``finetune.frozen_at_epoch`` / ``finetune.unfrozen_at_epoch`` on an MLflow logger).
"""

from __future__ import annotations

import logging

from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

from medimg.errors import ConfigError
from medimg.models.finetune import set_encoder_frozen, set_norm_frozen
from medimg.models.spec import FinetuneSpec

log = logging.getLogger(__name__)


class FinetuneScheduler(Callback):
    """Freeze, unfreeze and log a fine-tuning schedule.

    Args:
        spec: The fine-tuning settings.
        encoder_prefixes: Parameter-name prefixes of the encoder, relative to the network.
        network_attr: Attribute of the LightningModule holding the network (``"net"``);
            ``None`` when the prefixes are relative to the LightningModule itself.

    Example:
        >>> from medimg.models.spec import FinetuneSpec
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

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Freeze the encoder (and its norm layers) before the first step when asked."""
        network = self._network(pl_module)
        if self.spec.freeze_encoder_epochs > trainer.current_epoch:
            set_encoder_frozen(network, self.encoder_prefixes, True)
            self.frozen = True
            self._event(trainer, "frozen", trainer.current_epoch)
        if self.spec.freeze_norm:
            set_norm_frozen(network, self.encoder_prefixes)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Unfreeze when the frozen epochs are over; keep frozen norm layers in eval mode."""
        network = self._network(pl_module)
        if self.frozen and trainer.current_epoch >= self.spec.freeze_encoder_epochs:
            set_encoder_frozen(network, self.encoder_prefixes, False, keep_norm_frozen=self.spec.freeze_norm)
            self.frozen = False
            self._event(trainer, "unfrozen", trainer.current_epoch)
        if self.spec.freeze_norm:
            set_norm_frozen(network, self.encoder_prefixes)

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

    def state_dict(self) -> dict:
        """Checkpointed state, so a resumed run knows whether the encoder is frozen."""
        return {"frozen": self.frozen, "events": list(self.events)}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore :meth:`state_dict` (a resumed run re-freezes in ``on_fit_start`` when needed)."""
        self.events = list(state_dict.get("events", []))
