"""Stopping a run whose training loss stopped being a number."""

from __future__ import annotations

import math

from lightning.pytorch import Callback

from dlforge.errors import TrainingDiverged


class StopOnNonFiniteLoss(Callback):
    """Stop at the first NaN/inf training loss with a clear error, before it reaches a checkpoint."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        value = loss.item()  # a float: checking it costs far less than a torch.isfinite op per step
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"training loss is {value} at step {trainer.global_step} (epoch {trainer.current_epoch}); "
                "lower optimizer.lr, add warmup or use trainer.precision=32"
            )
