"""The sweeper's config (`hydra/sweeper=dlforge_optuna`) and its Hydra plugin class; the study itself
is run by `dlforge.sweeps.study`. Hydra imports this module on every start, so it stays light (no optuna)."""

import logging
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import MISSING, DictConfig


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.dlforge_optuna_sweeper.sweeper.OptunaSweeper"
    _recursive_: bool = False  # sampler and pruner stay configs: the sweeper builds them (seeded per trial)
    study_name: str = MISSING  # names the study in its storage; the same name continues the same study
    storage: Optional[str] = None  # any SQLAlchemy URL; null: a SQLite file in the sweep dir
    direction: str = "maximize"  # maximize | minimize the value train() returns (the monitored metric)
    n_trials: int = 20  # finished trials (complete, pruned or failed) the study ends with
    n_jobs: int = 1  # trials launched together: they run at the same time with hydra/launcher=joblib
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": 42})
    pruner: Any = None  # e.g. {_target_: optuna.pruners.MedianPruner}; null: no pruning
    params: dict[str, Any] = field(default_factory=dict)  # the search space, see dlforge/sweeps/study.py
    heartbeat_interval: int = 30  # seconds; a trial without heartbeat for twice that is re-queued


ConfigStore.instance().store(group="hydra/sweeper", name="dlforge_optuna", node=OptunaSweeperConf, provider="dlforge")


class OptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        from dlforge.sweeps.study import run_study

        if self.settings["n_jobs"] > 1 and type(self.launcher).__name__ == "BasicLauncher":
            logging.getLogger(__name__).warning(
                "Hydra's basic launcher runs the trials of a batch one after another: "
                "add hydra/launcher=joblib to run hydra.sweeper.n_jobs trials at the same time"
            )
        run_study(
            self.config,
            self.settings,
            arguments,
            launch=self.launcher.launch,
            validate=self.validate_batch_is_legal,
            config_loader=self.hydra_context.config_loader,
        )
