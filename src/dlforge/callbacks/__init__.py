"""Callbacks every training run gets, whatever the config's `callbacks` group holds."""

from __future__ import annotations

import math
import time
from pathlib import Path

from lightning.pytorch import Callback
from lightning.pytorch.callbacks import TQDMProgressBar

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


class ValidationCurves(Callback):
    """Writes each validation metric, every time it is computed, to `<directory>/<metric>.csv` (epoch,
    step, value; `val/acc` -> `val/acc.csv`): curves of any run, and the plots of the DVC train stage."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.started: set[str] = set()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        for name, value in sorted(trainer.callback_metrics.items()):
            if not name.startswith("val/") or value.numel() != 1:
                continue
            path = self.directory / f"{name}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a" if name in self.started else "w") as file:
                if name not in self.started:
                    file.write(f"epoch,step,{name}\n")
                file.write(f"{trainer.current_epoch},{trainer.global_step},{value.item()}\n")
            self.started.add(name)


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, redrawn at most `redraws_per_second` times a second (and at the end of
    each epoch), however fast the steps go. A redraw costs ~0.6 ms of the training thread here: every
    10 steps (a fixed `refresh_rate`) that was 0.7 % of the digits CNN's step time, and it would be
    several per cent of a model that steps in a millisecond."""

    def __init__(self, redraws_per_second: float = 4.0, leave: bool = False):
        super().__init__(leave=leave)
        self.min_interval = 1.0 / redraws_per_second
        self.last_redraw = -math.inf

    def _should_update(self, current: int, total: int) -> bool:  # what TQDMProgressBar asks every batch
        if not self.is_enabled:
            return False
        now = time.monotonic()
        if current == total or now - self.last_redraw >= self.min_interval:
            self.last_redraw = now
            return True
        return False
