"""Training: build data, model and trainer from config, fit, test the best checkpoint, report.
`train(cfg)` returns the monitored metric's best value, which sweeps optimise. The run's bookkeeping
(resume, seed, lineage, loggers, W&B, preemption, pruning, the report) is `dlforge.run.training`'s."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from omegaconf import DictConfig


@dataclass
class TrainOptions:
    """The top-level keys of `conf/train.yaml` that are not config groups."""

    task_name: str
    seed: int
    resume: str | None
    ckpt_path: str | None
    test: bool
    verify_data: bool
    monitor: str | None
    monitor_mode: Literal["min", "max"] | None


def main(cfg: DictConfig) -> float | None:
    return train(cfg)


def train(cfg: DictConfig) -> float | None:
    from dlforge.config import primary_groups
    from dlforge.config.checks import check_fields, check_keys, check_targets
    from dlforge.run.loggers import import_wandb_first
    from dlforge.runtime import loading_libraries

    with loading_libraries():
        # The whole config first, so that a bad value stops the run before any data is verified or loaded.
        check_keys(cfg, TrainOptions, primary_groups("train"))
        check_fields(cfg, TrainOptions)
        import_wandb_first(cfg.logger)
        check_targets(cfg)  # imports what the config names: torch, Lightning and the rest

        from dlforge.config.build import build_datamodule, build_model
        from dlforge.data.sharding import check_split
        from dlforge.run.training import TrainingRun

    run = TrainingRun.open(cfg)  # a new run, or the recorded one that `resume=` continues; seeded
    datamodule = run.verified(build_datamodule(run.config))
    model = build_model(run.config)
    trainer = run.build_trainer(model)
    check_split(datamodule, trainer.world_size)  # the batch sizes are global: before any DDP rank starts
    with run.recording():  # the lineage record and the W&B run closed however it ends; preemption
        run.fit(model, datamodule)
        if run.config.test:
            run.test(model, datamodule)
    return run.report()  # metrics.json and the summary table; None when preempted
