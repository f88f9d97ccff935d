"""Evaluation of a checkpoint: the model and data are rebuilt from the run config stored inside it,
so on the same data the train-time test metrics come out exactly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf


@dataclass
class EvalOptions:
    """The top-level keys of `conf/eval.yaml` that are not config groups."""

    task_name: str
    ckpt_path: str
    split: Literal["test", "val"]
    data: dict[str, Any]


def main(cfg: DictConfig) -> dict[str, Any]:
    return evaluate(cfg)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    from dlforge.run.loggers import finish_wandb_run, import_wandb_first, route_lightning_logs

    import_wandb_first(cfg.get("logger"))  # before the imports below bring in torch
    from hydra.core.hydra_config import HydraConfig

    from dlforge.config import primary_groups
    from dlforge.config.build import build_named, build_trainer, plain
    from dlforge.config.checks import check_fields, check_keys
    from dlforge.config.secrets import mask_urls
    from dlforge.data.sharding import check_split
    from dlforge.objectives.media import plain_artifacts
    from dlforge.run.load import load_run
    from dlforge.run.summary import print_summary, write_metrics
    from dlforge.runtime import tune_process

    hydra = HydraConfig.get()
    # Not the groups of Hydra's choices: `+model=vit` would add one, which eval would ignore (the model
    # and data come from the checkpoint).
    check_keys(cfg, EvalOptions, primary_groups("eval"))
    check_fields(cfg, EvalOptions)
    route_lightning_logs()
    tune_process()

    run = load_run(cfg.ckpt_path, OmegaConf.to_container(cfg.data))
    # Same precision as the run unless asked otherwise: that is what makes the metrics match exactly.
    precision = cfg.trainer.precision if cfg.trainer.precision is not None else run.config.trainer.precision
    loggers = build_named(cfg.get("logger"))
    trainer = build_trainer(cfg, callbacks=[], loggers=loggers, precision=precision)
    check_split(run.datamodule, trainer.world_size)  # the batch sizes are global: before any DDP rank starts
    for logger in loggers:
        logger.log_hyperparams(mask_urls({"eval": plain(cfg), "run": plain(run.config)}))
    try:
        stage = trainer.test if cfg.split == "test" else trainer.validate
        (metrics,) = stage(run.model, datamodule=run.datamodule, verbose=False)
        if cfg.split == "test":  # what train.py's test adds to metrics.json (per-class scores ...): the same here
            metrics |= plain_artifacts(run.model.test_artifacts())
    finally:
        finish_wandb_run()

    if trainer.is_global_zero:
        run_dir = hydra.runtime.output_dir
        write_metrics(run_dir, metrics)
        shown = {name: value for name, value in metrics.items() if not isinstance(value, list)}  # as train.py's
        print_summary(f"eval of {cfg.ckpt_path}", shown, {"run dir": run_dir})
    return metrics
