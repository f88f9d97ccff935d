"""Exact resume: what Lightning leaves out of a checkpoint but a bit-identical continuation needs."""

from __future__ import annotations

import csv
import logging
import random
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from lightning.pytorch import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import CombinedLoader
from torchmetrics import Metric

log = logging.getLogger(__name__)


@runtime_checkable
class StatefulLoader(Protocol):
    """A train loader that saves its position in the epoch (`dlforge.data.tensors.ResumableLoader`).
    Lightning 2.6 saves the states of exactly the loaders that have these two methods (its private
    `_Stateful` protocol), in the order of `CombinedLoader.flattened`; restoring selects them the same way."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class ExactResume(Callback):
    """Saves, per process, what Lightning leaves out of a checkpoint but an exact continuation needs:
    the RNG states (torch, CUDA, numpy, python; augmentation and dropout draw from them) and the
    accumulated state of every torchmetrics metric (an epoch's running training accuracy, say).
    Restores them at the start of the resumed training, after all the set-up that a resumed run does
    and an uninterrupted one does not, so the next random draw is the one the checkpoint stopped at.

    Also hands the train loaders their saved position in the epoch. Lightning means to, but only if
    it creates the loaders after restoring the loops, and a scheduler that asks for
    `trainer.estimated_stepping_batches` has it create them before (lightning 2.6).

    Under DDP it first gives every process a random stream of its own as fitting starts: all were seeded
    alike (the same initial weights), and would otherwise draw the same dropout masks and augmentations for
    their different samples, where one process taking the whole batch draws a new one for each.

    And keeps the logged history whole: a CSV logger's `metrics.csv` as it was at the checkpoint travels
    in it and is put back on resume (Lightning's CSV logger deletes the file when it starts, before any
    checkpoint is loaded; rows a killed run wrote after its checkpoint go, to be logged again). The row
    Lightning logs right after a checkpoint's hook (the step's, or the epoch's at its end), which the
    resumed run never reaches, is saved with the checkpoint and logged first when it resumes.
    """

    key = "exact_resume"

    def __init__(self):
        self.pending: dict[str, Any] | None = None
        self.loader_states: list[dict[str, Any]] = []
        self.csv_history: list[str] = []  # per CSV logger: its file as it was at the checkpoint
        self.unlogged_row: dict[str, Any] | None = None
        self.step_row_pending = False  # between a batch's end hooks and Lightning logging its row

    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.world_size > 1:  # before on_train_start, where a resumed run restores each rank's streams
            seed = torch.initial_seed() + trainer.global_rank
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.step_row_pending = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.step_row_pending = True  # runs before checkpoint callbacks' hooks (Lightning orders them last)

    def on_validation_start(self, trainer, pl_module) -> None:
        self.step_row_pending = False

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        # A checkpoint at an epoch's end resumes at the next epoch's start, where every metric starts empty;
        # the finished epoch's accumulators (train/acc's, not yet computed and reset) must not carry over.
        epoch_done = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch  # lightning 2.6 loop internals
        state = {"rng": _rng_state(), "metrics": {} if epoch_done else metric_states(pl_module)}
        unlogged_row = self._unlogged_row(trainer, epoch_done)  # on every rank: epoch values sync across them
        if trainer.is_global_zero:
            state["csv_history"] = [_csv_text(logger) for logger in _csv_loggers(trainer)]
            state["unlogged_row"] = unlogged_row
        if trainer.world_size > 1:  # every rank saves (rank 0 writes), so all take part in the gather
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, state)
            checkpoint[self.key] = gathered
        else:
            checkpoint[self.key] = [state]

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        self.loader_states = _saved_train_loader_states(checkpoint)
        states = checkpoint.get(self.key)
        if states is None or len(states) != trainer.world_size:
            saved_by = "no" if states is None else len(states)
            log.warning(
                f"the checkpoint has RNG and metric states of {saved_by} processes and this run has "
                f"{trainer.world_size}: random draws after resuming will differ from the original run's"
            )
            return
        self.pending = states[trainer.global_rank]
        if trainer.is_global_zero and "csv_history" in self.pending:
            self.csv_history = self.pending["csv_history"]
            self.unlogged_row = self.pending["unlogged_row"]

    def on_train_start(self, trainer, pl_module) -> None:
        if self.loader_states:  # the iterators exist by now, but samplers start at the first batch
            loaders = [
                loader
                for loader in CombinedLoader(trainer.train_dataloader).flattened
                if isinstance(loader, StatefulLoader)
            ]
            for loader, state in zip(loaders, self.loader_states):
                loader.load_state_dict(state)
            self.loader_states = []
        for logger, text in zip(_csv_loggers(trainer), self.csv_history):
            _restore_csv(logger, text)
        self.csv_history = []
        if self.unlogged_row is not None:
            trainer._logger_connector.log_metrics(self.unlogged_row["values"], step=self.unlogged_row["step"])
            self.unlogged_row = None
        if self.pending is not None:
            restore_metric_states(pl_module, self.pending["metrics"])
            _set_rng_state(self.pending["rng"])
            self.pending = None

    def _unlogged_row(self, trainer, epoch_done: bool) -> dict[str, Any] | None:
        """The row Lightning logs after the hook that saves this checkpoint, as it will log it (lightning 2.6:
        the training loop's `_logger_connector.update_train_step_metrics` / `update_train_epoch_metrics`),
        or None. Its values are final: the metrics logged this step or epoch are all in by now."""
        connector, loop = trainer._logger_connector, trainer.fit_loop.epoch_loop
        if epoch_done:  # saved at the epoch's end (after the module's on_train_epoch_end)
            values = trainer._results.metrics(False)["log"]
        elif self.step_row_pending and (connector.should_update_logs or trainer.fast_dev_run):
            values = trainer._results.metrics(True)["log"]
        else:
            return None
        if not values:
            return None
        # the step and epoch that `log_metrics` adds when it logs the row itself; the fit loop logs an epoch's
        # row with its count of steps taken one back, so that it shares the step of the epoch's last row
        step = loop._batches_that_stepped - 1 if epoch_done else loop._batches_that_stepped
        return {"values": {**values, "epoch": trainer.current_epoch}, "step": step}


def _csv_loggers(trainer) -> list[CSVLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, CSVLogger)]


def _csv_text(logger: CSVLogger) -> str:
    logger.save()  # rows still held in memory are part of what the checkpoint has seen logged
    path = Path(logger.log_dir) / "metrics.csv"
    return path.read_text() if path.is_file() else ""


def _restore_csv(logger: CSVLogger, text: str) -> None:
    """Put the rows up to the checkpoint back into the file Lightning's CSV logger deleted when it started,
    and give it their header (lightning 2.6: its writer's `metrics_keys`), which later rows extend."""
    writer = logger.experiment  # made now if not yet: that deletes the old file
    if text:
        Path(writer.metrics_file_path).write_text(text)
        writer.metrics_keys = next(csv.reader(text.splitlines()))


def _saved_train_loader_states(checkpoint: dict[str, Any]) -> list[dict[str, Any]]:
    # lightning 2.6: where its checkpoint format keeps the fit loop's combined train loader states
    return checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).get("combined_loader", [])


def _rng_state() -> dict[str, Any]:
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, python_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": version, "state": list(python_state), "gauss": gauss},
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy["keys"].numpy().astype(np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))


def metric_states(module: torch.nn.Module) -> dict[str, Any]:
    """The accumulated state and update count of every torchmetrics metric in `module`, on CPU."""
    return {
        name: {
            "state": {key: _to_cpu(value) for key, value in metric.metric_state.items()},
            "updates": metric.update_count,
        }
        for name, metric in module.named_modules()
        if isinstance(metric, Metric)
    }


def restore_metric_states(module: torch.nn.Module, states: dict[str, Any]) -> None:
    """Put `metric_states` back into the metrics of `module` (of the same names), on their devices."""
    for name, metric in module.named_modules():
        if isinstance(metric, Metric) and name in states:
            for key, value in states[name]["state"].items():
                moved = (
                    [item.to(metric.device) for item in value] if isinstance(value, list) else value.to(metric.device)
                )
                setattr(metric, key, moved)
            _set_update_count(metric, states[name]["updates"])


def _set_update_count(metric: Metric, count: int) -> None:
    # torchmetrics 1.9: private `_update_count` (read-only publicly as `update_count`), and `_computed`, the
    # cached result of `compute()`, which must not outlive the state it was computed from
    metric._update_count = count
    metric._computed = None


def _to_cpu(value: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    return [item.detach().cpu() for item in value] if isinstance(value, list) else value.detach().cpu()
