"""Training: seed, build data, model, callbacks, loggers and trainer from config, fit, test the best
checkpoint, report. `train(cfg)` returns the monitored metric's best value, which sweeps optimise."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Optional

from omegaconf import DictConfig

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    """The top-level keys of `conf/train.yaml` that are not config groups."""

    task_name: str
    seed: int
    resume: Optional[str]
    ckpt_path: Optional[str]
    test: bool
    verify_data: bool
    monitor: Optional[str]
    monitor_mode: Optional[Literal["min", "max"]]


def main(cfg: DictConfig) -> float | None:
    return train(cfg)


def train(cfg: DictConfig) -> float | None:
    from dlforge.config.checks import check_fields

    check_fields(cfg, TrainOptions)

    import lightning
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import WandbLogger

    from dlforge.config.build import build_datamodule, build_model, build_named, build_trainer, plain
    from dlforge.callbacks import StopOnNonFiniteLoss, ValidationCurves
    from dlforge.run.checkpoints import AtomicCheckpointIO, RecordLineage, TrainingPreempted
    from dlforge.run.lineage import Lineage
    from dlforge.callbacks.media import MediaLogger
    from dlforge.objectives.media import plain_artifacts
    from dlforge.run.loggers import finish_wandb_run, log_checkpoint_artifact, route_lightning_logs, wandb_run
    from dlforge.data.verify import verified_data
    from dlforge.run.resume import ExactResume, resume_point
    from dlforge.runtime import tune_process
    from dlforge.run.summary import print_summary, write_metrics
    from dlforge.sweeps.trial import trial_pruning

    route_lightning_logs()
    tune_process()

    hydra = HydraConfig.get()
    overrides = list(hydra.overrides.task)
    resumed = resume_point(cfg.resume, overrides, hydra.runtime.output_dir, hydra.mode == RunMode.MULTIRUN)
    if resumed is not None:
        cfg = resumed.config  # the run goes on exactly as it was recorded
    lightning.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = build_datamodule(cfg)
    data_version = verified_data(  # loads the data; stops here if it is not data.dvc's
        datamodule, Path(cfg.paths.data_dir), Path(cfg.paths.root_dir), cfg.verify_data
    )
    model = build_model(cfg)
    if cfg.monitor is None:
        cfg.monitor, cfg.monitor_mode = model.default_monitor
    run_dir = Path(cfg.paths.output_dir)
    if resumed is None:
        lineage = Lineage.start(run_dir, plain(cfg), overrides)
    else:
        lineage = Lineage.resume(run_dir, plain(cfg), resumed.checkpoint, resumed.checkpoint_path, overrides)
        if lineage.wandb_id is not None and cfg.get("logger") and "wandb" in cfg.logger:
            cfg.logger.wandb.id = lineage.wandb_id  # continue the same W&B run
    lineage.set_data(asdict(data_version))
    pruning = trial_pruning(cfg.monitor, cfg.monitor_mode)  # only in a trial of an Optuna sweep
    loggers = build_named(cfg.get("logger"))
    callbacks = build_named(cfg.get("callbacks")) + [
        StopOnNonFiniteLoss(), RecordLineage(lineage), ExactResume(), ValidationCurves(run_dir / "curves")
    ]
    # Lightning calls every hook of every callback at every step (~12 µs a step for each callback here)
    callbacks += [MediaLogger()] if any(isinstance(logger, WandbLogger) for logger in loggers) else []
    callbacks += [pruning] if pruning is not None else []
    trainer = build_trainer(cfg, callbacks, loggers, plugins=[AtomicCheckpointIO()])
    for logger in loggers:
        if not isinstance(logger, WandbLogger):  # W&B's config is the whole lineage record (RecordLineage)
            logger.log_hyperparams(plain(cfg))
    best = next((callback for callback in trainer.checkpoint_callbacks if isinstance(callback, ModelCheckpoint)), None)

    try:
        started = time.perf_counter()
        trainer.fit(model, datamodule=datamodule, ckpt_path=resumed and resumed.checkpoint_path, weights_only=True)
        fit_seconds = time.perf_counter() - started
        if pruning is not None:
            pruning.raise_if_pruned(trainer)  # before testing; the sweeper marks the trial pruned
        best_path = best.best_model_path if best is not None else ""
        metrics = {}
        if cfg.test:
            trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None, weights_only=True, verbose=False)
            metrics = {name: value.item() for name, value in trainer.callback_metrics.items() if name.startswith("test/")}
        best_score = best.best_model_score if best is not None else trainer.callback_metrics.get(cfg.monitor)
        best_score = None if best_score is None else best_score.item()
        if best_score is not None:
            metrics[f"best {cfg.monitor}"] = best_score
        metrics |= plain_artifacts(model.test_artifacts())
        checkpoints = _checkpoint_paths(run_dir, best_path)
        if trainer.is_global_zero:
            lineage.finish("finished", metrics=metrics, checkpoints=checkpoints, wandb_run=wandb_run(trainer))
            log_checkpoint_artifact(trainer, best_path, {"monitor": cfg.monitor, "score": best_score, "step": trainer.global_step})
    except TrainingPreempted as stop:
        sweep = hydra.mode == RunMode.MULTIRUN
        if trainer.is_global_zero:
            checkpoints = _checkpoint_paths(run_dir, best.best_model_path if best is not None else "")
            lineage.finish("preempted", checkpoints=checkpoints, wandb_run=wandb_run(trainer))
            stops = "; the sweep stops here" if sweep else ""
            log.info(f"{stop}{stops}. Continue this run with: python src/train.py resume={run_dir}")
        finish_wandb_run(preempted=True)
        if sweep:  # the signal was sent to the sweep's process, to stop it: no further job starts
            raise SystemExit(0)
        return None
    except BaseException as error:
        if trainer.is_global_zero:
            lineage.finish("interrupted", error=f"{type(error).__name__}: {error}", wandb_run=wandb_run(trainer))
        raise
    finally:
        finish_wandb_run()

    if trainer.is_global_zero:
        write_metrics(run_dir, {"fit seconds": fit_seconds, **metrics})
        print_summary(
            f"{cfg.task_name}: {type(model).__name__} of {type(model.net).__name__}",
            {name: value for name, value in metrics.items() if not isinstance(value, list)},
            {"run dir": str(run_dir), **{f"{name} checkpoint": path for name, path in checkpoints.items() if isinstance(path, str)}},
        )
    return best_score


def _checkpoint_paths(run_dir: Path, best_path: str) -> dict[str, str | list[str] | None]:
    """The best checkpoint, the newest training state (`last.ckpt`, resolved) and every file kept."""
    directory = run_dir / "checkpoints"
    last = directory / "last.ckpt"
    return {
        "best": best_path or None,
        "last": str(last.resolve()) if last.exists() else None,
        "kept": sorted(path.name for path in directory.glob("*.ckpt")) if directory.is_dir() else [],
    }
