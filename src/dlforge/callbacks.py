"""Callbacks every training run gets, whatever the config's `callbacks` group holds."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback

from dlforge.errors import TrainingDiverged


class StopOnNonFiniteLoss(Callback):
    """Stop at the first NaN/inf training loss with a clear error, before it reaches a checkpoint."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss):
            raise TrainingDiverged(
                f"training loss is {loss.item()} at step {trainer.global_step} (epoch {trainer.current_epoch}); "
                "lower optimizer.lr, add warmup or use trainer.precision=32"
            )
