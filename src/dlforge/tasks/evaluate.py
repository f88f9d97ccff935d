"""Evaluation of a checkpoint: the model and data are rebuilt from the run config stored inside it,
so on the same data the train-time test metrics come out exactly."""

from __future__ import annotations

from omegaconf import DictConfig


def main(cfg: DictConfig) -> dict[str, float]:
    return evaluate(cfg)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    from hydra.core.hydra_config import HydraConfig

    from dlforge.config.build import build_named, build_trainer, plain
    from dlforge.run.load import load_run
    from dlforge.run.loggers import finish_wandb_run, route_lightning_logs
    from dlforge.runtime import tune_process
    from dlforge.run.summary import print_summary, write_metrics

    route_lightning_logs()
    tune_process()

    run = load_run(cfg.ckpt_path)
    datamodule, model, run_cfg = run.datamodule, run.model, run.config

    # Same precision as the run unless asked otherwise: that is what makes the metrics match exactly.
    precision = cfg.trainer.precision if cfg.trainer.precision is not None else run_cfg.trainer.precision
    loggers = build_named(cfg.get("logger"))
    trainer = build_trainer(cfg, callbacks=[], loggers=loggers, precision=precision)
    for logger in loggers:
        logger.log_hyperparams({"eval": plain(cfg), "run": plain(run_cfg)})
    try:
        if cfg.split == "test":
            (metrics,) = trainer.test(model, datamodule=datamodule, verbose=False)
        else:
            (metrics,) = trainer.validate(model, datamodule=datamodule, verbose=False)
    finally:
        finish_wandb_run()

    if trainer.is_global_zero:
        run_dir = HydraConfig.get().runtime.output_dir
        write_metrics(run_dir, metrics)
        print_summary(f"eval of {cfg.ckpt_path}", metrics, {"run dir": run_dir})
    return metrics
