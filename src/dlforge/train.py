"""Training: seed, build data, model, callbacks, loggers and trainer from config, fit, test the best
checkpoint, report. `train(cfg)` returns the monitored metric's best value, which sweeps optimise."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, Optional

from omegaconf import DictConfig


@dataclass
class TrainOptions:
    """The top-level keys of `conf/train.yaml` that are not config groups."""

    task_name: str
    seed: int
    ckpt_path: Optional[str]
    test: bool
    monitor: Optional[str]
    monitor_mode: Optional[Literal["min", "max"]]


def main(cfg: DictConfig) -> float | None:
    return train(cfg)


def train(cfg: DictConfig) -> float | None:
    from dlforge.config import check_fields

    check_fields(cfg, TrainOptions)

    import lightning
    from hydra.core.hydra_config import HydraConfig

    from dlforge.build import build_datamodule, build_model, build_named, build_trainer, plain
    from dlforge.callbacks import StopOnNonFiniteLoss
    from dlforge.checkpoints import EmbedRunConfig, load_checkpoint
    from dlforge.loggers import finish_wandb_run, route_lightning_logs
    from dlforge.summary import print_summary, write_metrics

    route_lightning_logs()

    if cfg.ckpt_path is not None:
        load_checkpoint(cfg.ckpt_path)  # fail now, with a clear message, rather than inside fit
    lightning.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = build_datamodule(cfg)
    model = build_model(cfg)
    if cfg.monitor is None:
        cfg.monitor, cfg.monitor_mode = model.default_monitor
    run_config = plain(cfg)
    callbacks = build_named(cfg.get("callbacks")) + [StopOnNonFiniteLoss(), EmbedRunConfig(run_config)]
    loggers = build_named(cfg.get("logger"))
    trainer = build_trainer(cfg, callbacks, loggers)
    for logger in loggers:
        logger.log_hyperparams(run_config)

    try:
        started = time.perf_counter()
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
        fit_seconds = time.perf_counter() - started
        checkpoint = trainer.checkpoint_callback
        best_path = checkpoint.best_model_path if checkpoint is not None else ""
        test_metrics = {}
        if cfg.test:
            trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None, weights_only=True, verbose=False)
            test_metrics = {name: value.item() for name, value in trainer.callback_metrics.items() if name.startswith("test/")}
    finally:
        finish_wandb_run()

    best_score = checkpoint.best_model_score if checkpoint is not None else trainer.callback_metrics.get(cfg.monitor)
    best_score = None if best_score is None else best_score.item()
    if trainer.is_global_zero:
        run_dir = HydraConfig.get().runtime.output_dir
        report = {"fit seconds": fit_seconds, **test_metrics}
        if best_score is not None:
            report[f"best {cfg.monitor}"] = best_score
        confusion = getattr(model, "test_confusion_matrix", None)
        write_metrics(run_dir, {**report, **({"test/confusion_matrix": confusion.tolist()} if confusion is not None else {})})
        print_summary(
            f"{cfg.task_name}: {type(model).__name__} of {type(model.net).__name__}",
            report,
            {"run dir": run_dir, "best checkpoint": best_path, "last checkpoint": checkpoint.last_model_path if checkpoint else None},
        )
    return best_score
