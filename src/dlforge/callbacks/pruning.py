"""Optuna pruning inside a trial's training: report the monitored validation metric to the job's trial
after every validation, and stop training when the study's pruner says so."""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch import Callback

from dlforge.errors import ConfigError
from dlforge.sweeps.trial import PRUNED_AT, job_trial


class TrialPruning(Callback):
    """Rank 0 reports `monitor` after each validation epoch and asks the pruner; every rank gets its
    answer, so all of them stop together. After fit, `raise_if_pruned` ends a pruned trial. `pruner` is
    the sweep's pruner config, read by whoever builds this (ranks started by ddp_spawn have no Hydra config)."""

    def __init__(self, monitor: str, monitor_mode: str, pruner: dict[str, Any] | None) -> None:
        self.monitor = monitor
        self.monitor_mode = monitor_mode
        self.pruner = pruner
        self.trial = None
        self.pruned_at: str | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.is_global_zero and self.trial is None:
            self.trial = job_trial(self.pruner)
            direction = self.trial.study.direction.name.lower()
            if direction != {"max": "maximize", "min": "minimize"}[self.monitor_mode]:
                raise ConfigError(
                    f"hydra.sweeper.direction={direction}, but monitor {self.monitor} is best at its "
                    f"{self.monitor_mode}imum (monitor_mode={self.monitor_mode})"
                )

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        prune = None
        if trainer.is_global_zero:
            value = trainer.callback_metrics.get(self.monitor)
            if value is None:
                logged = ", ".join(trainer.callback_metrics)
                raise ConfigError(f"monitor {self.monitor} was not logged; logged: {logged}")
            self.trial.report(value.item(), step=trainer.current_epoch)
            if self.trial.should_prune():
                prune = f"epoch {trainer.current_epoch}: {self.monitor}={value.item():.6g}"
                self.trial.set_user_attr(PRUNED_AT, prune)  # for the process that called fit, under ddp_spawn
        self.pruned_at = trainer.strategy.broadcast(prune)
        if self.pruned_at is not None:
            trainer.should_stop = True

    def raise_if_pruned(self, trainer) -> None:
        """After fit: rank 0 raises TrialPruned, which the sweeper records; the other ranks of a pruned
        trial exit quietly (an exception would make Hydra print an error and Lightning kill every rank)."""
        import optuna

        if trainer.global_rank > 0:
            if self.pruned_at is not None:
                sys.exit(0)
            return
        trial = self.trial or job_trial(self.pruner)  # no trial yet when fit ran in ranks ddp_spawn started
        pruned_at = trial.user_attrs.get(PRUNED_AT)
        if pruned_at is not None:
            raise optuna.TrialPruned(f"pruned at {pruned_at}")
