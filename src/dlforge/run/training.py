"""One training run, from its resume point to its report (NeMo's `exp_manager` idea, without its flags).

`TrainingRun` keeps the books around what `dlforge.tasks.train` does (build, fit, test): the recorded
config and checkpoint that `resume=` continues, the seed, the run dir, the lineage record, the loggers
and the W&B run, data verification, the callbacks every run gets, Optuna pruning in a sweep's trial,
preemption, and the end-of-run report.

The callbacks every run gets, whatever the `callbacks` group holds:
- `StopOnNonFiniteLoss`: a NaN/inf loss stops the run with its step, before it reaches a checkpoint;
- `RecordLineage`: the record is completed when fitting starts and travels inside every checkpoint;
- `ExactResume`: RNG and metric states in every checkpoint, so a resumed run ends bit-identical;
- `MetricCurves`: `curves/<metric>.csv` (validation metrics, training loss): the report's and DVC's plots;
- `MediaLogger`: the objective's test artifacts and sample media in `media/` and in every logger;
- `TrialPruning`, only in a trial of an Optuna sweep: reports to the trial, stops when it is pruned.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from dlforge.callbacks.checkpoints import TrainingPreempted
from dlforge.callbacks.curves import MetricCurves
from dlforge.callbacks.divergence import StopOnNonFiniteLoss
from dlforge.callbacks.lineage import RecordLineage
from dlforge.callbacks.media import MediaLogger
from dlforge.callbacks.pruning import TrialPruning
from dlforge.callbacks.resume import ExactResume
from dlforge.config.build import build_named, build_trainer, plain
from dlforge.config.secrets import mask_urls
from dlforge.data.verify import verified_data
from dlforge.objectives.media import plain_artifacts
from dlforge.report.run_report import write_run_report
from dlforge.run.checkpoints import AtomicCheckpointIO, checkpoint_paths
from dlforge.run.lineage import FILE_NAME as LINEAGE_FILE
from dlforge.run.lineage import Lineage, hardware, redact
from dlforge.run.loggers import (
    finish_wandb_run,
    log_checkpoint_artifact,
    log_lineage_to_mlflow,
    mlflow_run,
    route_lightning_logs,
    wandb_run,
    wandb_user_error,
)
from dlforge.run.resume import ResumePoint, resume_point
from dlforge.run.summary import print_summary, write_metrics
from dlforge.runtime import tune_process
from dlforge.sweeps.trial import in_trial, trial_pruned

log = logging.getLogger(__name__)


class TrainingRun:
    """The bookkeeping of one training run. In order: `open`, `verified`, `build_trainer`, then `fit` and
    `test` inside `recording`, then `report`. Only the global-zero process writes records and reports."""

    def __init__(self, config: DictConfig, resumed: ResumePoint | None, overrides: list[str], multirun: bool):
        self.config = config  # the run's config: the recorded one when resuming
        self.resumed = resumed  # what `resume=` continues from
        self.overrides = overrides
        self.multirun = multirun
        self.run_dir = Path(config.paths.output_dir)
        self.data_version = None
        self.lineage: Lineage | None = None
        self.trainer: Trainer | None = None
        self.pruning: TrialPruning | None = None
        self.model: LightningModule | None = None
        self.fit_seconds: float | None = None
        self.metrics: dict[str, Any] = {}
        self.best_score: float | None = None
        self.checkpoints: dict[str, Any] = {}
        self.preempted = False
        self.wandb = None  # this process's W&B run, once `begin` started it

    @classmethod
    def open(cls, cfg: DictConfig) -> TrainingRun:
        """A new run of `cfg`, or the run `cfg.resume` continues with its recorded config; seeded."""
        route_lightning_logs()
        tune_process()
        hydra = HydraConfig.get()
        overrides = list(hydra.overrides.task)
        multirun = hydra.mode == RunMode.MULTIRUN
        resumed = resume_point(cfg.resume, overrides, hydra.runtime.output_dir, multirun)
        config = cfg if resumed is None else resumed.config  # a resumed run goes on exactly as it was recorded
        lightning.seed_everything(config.seed, workers=True, verbose=False)
        return cls(config, resumed, overrides, multirun)

    def verified(self, datamodule):
        """`datamodule` with its data loaded; stops the run here if the data is not data.dvc's."""
        paths = self.config.paths
        data_dir, root_dir = Path(paths.data_dir), Path(paths.root_dir)
        self.data_version = verified_data(datamodule, data_dir, root_dir, self.config.verify_data)
        return datamodule

    def build_trainer(self, model: LightningModule) -> Trainer:
        """The trainer of the config's `trainer`, `logger` and `callbacks` groups, plus the callbacks every
        run gets and atomic checkpoint writes; the lineage record is started (or continued) here."""
        cfg = self.config
        if cfg.monitor is None:
            cfg.monitor, cfg.monitor_mode = model.default_monitor
        self.lineage = self._lineage()
        loggers = build_named(cfg.get("logger"), self._continued_logs())
        callbacks = build_named(cfg.get("callbacks")) + self._callbacks()
        self.trainer = build_trainer(cfg, callbacks, loggers, plugins=[AtomicCheckpointIO()])
        for logger in loggers:
            if not isinstance(logger, WandbLogger):  # W&B's config is the whole lineage record (RecordLineage)
                logger.log_hyperparams(mask_urls(plain(cfg)))
        return self.trainer

    def _lineage(self) -> Lineage:
        cfg = self.config
        if self.resumed is None:
            lineage = Lineage.start(self.run_dir, plain(cfg), self.overrides)
        else:
            checkpoint, path = self.resumed.checkpoint, self.resumed.checkpoint_path
            lineage = Lineage.resume(self.run_dir, plain(cfg), checkpoint, path, self.overrides)
        lineage.set_data(asdict(self.data_version))
        return lineage

    def _continued_logs(self) -> dict[str, dict[str, Any]]:
        """Arguments of the `logger` group's entries (by name) that make a resumed run continue what it logged
        before: the same W&B run and MLflow run, and in its TensorBoard dir the events of the steps after its
        checkpoint hidden (a killed run may have logged some; they are logged again). Arguments, not config: the
        config is logged as MLflow params, which refuse a changed value."""
        if self.resumed is None:
            return {}
        # Lightning logs the work of optimizer step n as step n - 1: the checkpoint's step is the first logged again
        continued = {"tensorboard": {"purge_step": self.resumed.checkpoint["global_step"]}}
        if self.lineage.wandb_id is not None:
            continued["wandb"] = {"id": self.lineage.wandb_id}
        if self.lineage.mlflow_run_id is not None:
            continued["mlflow"] = {"run_id": self.lineage.mlflow_run_id}
        return continued

    def _callbacks(self) -> list[Callback]:
        curves = MetricCurves(self.run_dir / "curves")
        media = MediaLogger(self.run_dir / "media")  # the report shows them, whatever the loggers
        callbacks = [StopOnNonFiniteLoss(), RecordLineage(self), ExactResume(), curves, media]
        # Lightning calls every hook of every callback at every step (~12 µs a step for each callback here)
        if in_trial():
            # read here: ranks started by ddp_spawn have no HydraConfig
            pruner = HydraConfig.get().sweeper.get("pruner")
            pruner = OmegaConf.to_container(pruner, resolve=True) if pruner else None
            self.pruning = TrialPruning(self.config.monitor, self.config.monitor_mode, pruner)
            callbacks.append(self.pruning)
        return callbacks

    def begin(self, trainer: Trainer) -> None:
        """`RunRecord.begin`, called by RecordLineage as fitting starts (global-zero process). The W&B run is
        kept from here on: asking the logger for it after W&B failed to start would start it (and wait) again."""
        self.wandb = wandb_run(trainer)
        self.lineage.set_data_read(trainer.datamodule)  # set up by now: Lightning sets up the data before callbacks
        self.lineage.begin(hardware(trainer), self.wandb, mlflow_run(trainer))

    def embedded(self) -> dict[str, Any]:
        """`RunRecord.embedded`: what RecordLineage puts in every checkpoint."""
        return self.lineage.embedded()

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Around fitting and testing: close the lineage record and this process's W&B run however the run
        ends. Finished: the final metrics and checkpoints recorded, the best checkpoint a W&B artifact.
        Preempted (SIGTERM/SIGUSR1, the training state saved): recorded as such, the W&B run marked
        preempting; a single run then returns normally, a multirun job exits 0 so that no later job starts
        (the signal was sent to the sweep's process to stop it). A trial its pruner stopped is recorded as
        pruned, with the best value it reached and its report, and raised on (for the sweeper). Anything else
        is recorded as interrupted and raised on."""
        try:
            yield
            self._finish()
        except TrainingPreempted as stop:
            self._stop(stop)
        except BaseException as error:
            if trial_pruned(error):
                self._pruned(error)
                raise
            wandb_error = wandb_user_error(error)
            if self.trainer.is_global_zero:
                failure = wandb_error or error
                self.lineage.finish("interrupted", error=f"{type(failure).__name__}: {failure}", wandb_run=self.wandb)
            if wandb_error is not None:
                raise wandb_error from error
            raise
        finally:
            finish_wandb_run()

    def fit(self, model: LightningModule, datamodule) -> None:
        """Fit from the start, or from the resume point; a trial its pruner stopped ends here (TrialPruned)."""
        self.model = model
        started = time.perf_counter()
        checkpoint = self.resumed and self.resumed.checkpoint_path
        self.trainer.fit(model, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
        self.fit_seconds = time.perf_counter() - started
        if self.pruning is not None:
            self.pruning.raise_if_pruned(self.trainer)  # before testing; the sweeper marks the trial pruned

    def test(self, model: LightningModule, datamodule) -> None:
        """Test the best checkpoint (the final weights when there is none)."""
        best = self._best_checkpoint_path()
        self.trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True, verbose=False)
        logged = self.trainer.callback_metrics
        self.metrics = {name: value.item() for name, value in logged.items() if name.startswith("test/")}

    def report(self) -> float | None:
        """`metrics.json`, `report.html` and the summary table of a finished run; returns the monitored metric's
        best value (what sweeps optimise). A preempted run has nothing to report: None."""
        if self.preempted:
            return None
        if self.trainer.is_global_zero:
            self._write_reports()
            print_summary(
                f"{self.config.task_name}: {type(self.model).__name__} of {type(self.model.net).__name__}",
                {name: value for name, value in self.metrics.items() if not isinstance(value, list)},
                {
                    "run dir": str(self.run_dir),
                    **{f"{name} checkpoint": path for name, path in self.checkpoints.items() if isinstance(path, str)},
                },
            )
        return self.best_score

    def _write_reports(self) -> None:
        write_metrics(self.run_dir, {"fit seconds": self.fit_seconds, **self.metrics})
        started = time.perf_counter()
        report = write_run_report(self.run_dir)
        log.info(f"report: {report} (written in {time.perf_counter() - started:.2f} s)")

    def _record_best(self) -> None:
        """The monitored metric's best value among the metrics, and the checkpoints."""
        best = self._best_checkpoint()
        score = best.best_model_score if best is not None else self.trainer.callback_metrics.get(self.config.monitor)
        self.best_score = None if score is None else score.item()
        if self.best_score is not None:
            self.metrics[f"best {self.config.monitor}"] = self.best_score
        self.checkpoints = checkpoint_paths(self.run_dir, self._best_checkpoint_path())

    def _finish(self) -> None:
        self._record_best()
        self.metrics |= plain_artifacts(self.model.test_artifacts())
        if self.trainer.is_global_zero:
            self.lineage.finish("finished", metrics=self.metrics, checkpoints=self.checkpoints, wandb_run=self.wandb)
            metadata = {"monitor": self.config.monitor, "score": self.best_score, "step": self.trainer.global_step}
            log_checkpoint_artifact(self.trainer, self._best_checkpoint_path(), metadata)
            log_lineage_to_mlflow(self.trainer, redact(self.lineage.record), self.run_dir / LINEAGE_FILE)

    def _pruned(self, pruned: BaseException) -> None:
        """A trial its pruner stopped (untested): recorded as pruned, with the best value it reached (a sweep's
        comparison shows it beside the finished trials), and its report written."""
        self._record_best()
        if self.trainer.is_global_zero:
            self.lineage.finish(
                "pruned", metrics=self.metrics, checkpoints=self.checkpoints, error=str(pruned), wandb_run=self.wandb
            )
            log_lineage_to_mlflow(self.trainer, redact(self.lineage.record), self.run_dir / LINEAGE_FILE)
            self._write_reports()

    def _stop(self, stop: TrainingPreempted) -> None:
        self.preempted = True
        if self.trainer.is_global_zero:
            checkpoints = checkpoint_paths(self.run_dir, self._best_checkpoint_path())
            self.lineage.finish("preempted", checkpoints=checkpoints, wandb_run=self.wandb)
            stops = "; the sweep stops here" if self.multirun else ""
            log.info(f"{stop}{stops}. Continue this run with: python src/train.py resume={self.run_dir}")
        finish_wandb_run(preempted=True)
        if self.multirun:
            raise SystemExit(0)

    def _best_checkpoint(self) -> ModelCheckpoint | None:
        callbacks = self.trainer.checkpoint_callbacks
        return next((callback for callback in callbacks if isinstance(callback, ModelCheckpoint)), None)

    def _best_checkpoint_path(self) -> str:
        best = self._best_checkpoint()
        return best.best_model_path if best is not None else ""
