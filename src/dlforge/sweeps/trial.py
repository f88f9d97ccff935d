"""The job's side of an Optuna sweep: report the monitored validation metric to the job's trial after
every validation, and stop training when the study's pruner says so.

The sweeper (dlforge.sweeps.study) tells each job which trial it is through environment variables set with
`hydra.job.env_set`: they reach the job whatever the launcher, and DDP ranks inherit them.
"""

from __future__ import annotations

import os
import sys

from lightning.pytorch import Callback

from dlforge.errors import ConfigError

STORAGE_ENV = "DLFORGE_OPTUNA_STORAGE"
STUDY_ENV = "DLFORGE_OPTUNA_STUDY"
TRIAL_ID_ENV = "DLFORGE_OPTUNA_TRIAL_ID"
PRUNED_AT = "pruned_at"  # trial user attr: when and why the pruner stopped it


def trial_pruning(monitor: str, monitor_mode: str) -> TrialPruning | None:
    """The callback for a job that is a trial of an Optuna sweep; None for any other run."""
    if TRIAL_ID_ENV not in os.environ:
        return None
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    pruner = HydraConfig.get().sweeper.get("pruner")  # read here: ranks started by ddp_spawn have no HydraConfig
    return TrialPruning(monitor, monitor_mode, OmegaConf.to_container(pruner, resolve=True) if pruner else None)


class TrialPruning(Callback):
    """Rank 0 reports `monitor` after each validation epoch and asks the pruner; every rank gets its
    answer, so all of them stop together. After fit, `raise_if_pruned` ends a pruned trial."""

    def __init__(self, monitor: str, monitor_mode: str, pruner: dict | None) -> None:
        self.monitor = monitor
        self.monitor_mode = monitor_mode
        self.pruner = pruner
        self.trial = None
        self.pruned_at: str | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.is_global_zero and self.trial is None:
            self.trial = _load_trial(self.pruner)
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
        trial = self.trial or _load_trial(self.pruner)  # no trial yet when fit ran in ranks ddp_spawn started
        pruned_at = trial.user_attrs.get(PRUNED_AT)
        if pruned_at is not None:
            raise optuna.TrialPruned(f"pruned at {pruned_at}")


def _load_trial(pruner: dict | None):
    """This job's trial, in its study reloaded from storage with the sweep's pruner."""
    import optuna
    from hydra.utils import instantiate

    from dlforge.sweeps.study import open_storage

    study = optuna.load_study(
        study_name=os.environ[STUDY_ENV],
        storage=open_storage(os.environ[STORAGE_ENV]),
        sampler=optuna.samplers.RandomSampler(),  # never asked: the sweeper suggested the params
        pruner=instantiate(pruner) if pruner else optuna.pruners.NopPruner(),
    )
    return optuna.Trial(study, int(os.environ[TRIAL_ID_ENV]))
