"""The job's side of an Optuna sweep: which trial of which study it is.

The sweeper (`dlforge.sweeps.study`) tells each job through environment variables set with
`hydra.job.env_set`: they reach the job whatever the launcher, and DDP ranks inherit them. The job
reports to its trial through `dlforge.callbacks.pruning.TrialPruning`. Imports no optuna until a
trial is loaded: every training run asks `in_trial()`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

STORAGE_ENV = "DLFORGE_OPTUNA_STORAGE"
STUDY_ENV = "DLFORGE_OPTUNA_STUDY"
TRIAL_ID_ENV = "DLFORGE_OPTUNA_TRIAL_ID"
PRUNED_AT = "pruned_at"  # trial user attr: when and why the pruner stopped it


def in_trial() -> bool:
    """Whether this process runs a trial of an Optuna sweep."""
    return TRIAL_ID_ENV in os.environ


def job_settings(storage_url: str, study_name: str, trial_id: int) -> dict[str, str]:
    """The environment that makes a job the trial `trial_id` of a study (read back by `job_trial`)."""
    return {STORAGE_ENV: storage_url, STUDY_ENV: study_name, TRIAL_ID_ENV: str(trial_id)}


def job_trial(pruner: dict[str, Any] | None):
    """This job's trial (an `optuna.Trial`), in its study reloaded from storage with the sweep's pruner."""
    import optuna
    from hydra.utils import instantiate

    from dlforge.sweeps.storage import open_storage

    study = optuna.load_study(
        study_name=os.environ[STUDY_ENV],
        storage=open_storage(os.environ[STORAGE_ENV]),
        sampler=optuna.samplers.RandomSampler(),  # never asked: the sweeper suggested the params
        pruner=instantiate(pruner) if pruner else optuna.pruners.NopPruner(),
    )
    return optuna.Trial(study, int(os.environ[TRIAL_ID_ENV]))


def trial_pruned(error: BaseException) -> bool:
    """Whether `error` is Optuna's TrialPruned (`TrialPruning` raised it); optuna is not imported for this: a
    run outside a sweep has not imported it."""
    optuna = sys.modules.get("optuna")
    return optuna is not None and isinstance(error, optuna.TrialPruned)
