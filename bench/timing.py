"""Instruments for the benchmarks: a step timer callback, a clock on the data loader's fetches, a quiet profiler."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback
from lightning.pytorch.profilers import SimpleProfiler
from torch.utils.data import dataloader


class DataClock:
    """Time spent inside DataLoader's `_next_data`: waiting for batches, whether made in this process
    (sampling, indexing, collation) or by worker processes (then only what they have not made ahead)."""

    seconds = 0.0
    # torch 2.14: private iterator classes; `_next_data` is where each returns the next batch
    _iterators = (dataloader._SingleProcessDataLoaderIter, dataloader._MultiProcessingDataLoaderIter)

    @classmethod
    def install(cls) -> None:
        for iterator_class in cls._iterators:
            iterator_class._next_data = cls._timed(iterator_class._next_data)

    @classmethod
    def _timed(cls, next_data):
        def timed(iterator):
            started = time.perf_counter()
            try:
                return next_data(iterator)
            finally:
                cls.seconds += time.perf_counter() - started

        return timed


class StepTimer(Callback):
    """Times `measure_steps` optimizer steps after `warmup_steps`, from the end of one step to the end
    of the next within an epoch (so data fetching counts, validation and epoch-end checkpoints don't),
    then stops training. The result of the last fit is left in `StepTimer.result` (and `result_path`)."""

    result: dict = {}

    def __init__(self, warmup_steps: int, measure_steps: int, result_path: str | None = None):
        self.result_path = result_path
        self.warmup_steps = warmup_steps
        self.measure_steps = measure_steps
        self.intervals: list[float] = []
        self.data_seconds = 0.0
        self.last_end: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.last_end = None  # intervals never span an epoch boundary

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":  # the step's kernels done, as the raw loop waits for them too
            torch.cuda.synchronize()
        now = time.perf_counter()
        if self.last_end is not None and trainer.global_step > self.warmup_steps:
            self.intervals.append(now - self.last_end)
            self.data_seconds += DataClock.seconds - self.data_mark
        self.last_end, self.data_mark = now, DataClock.seconds
        if len(self.intervals) >= self.measure_steps:
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        StepTimer.result = {
            "seconds": sum(self.intervals),
            "steps": len(self.intervals),
            "data_seconds": self.data_seconds,
        }
        if self.result_path and trainer.is_global_zero:
            Path(self.result_path).write_text(json.dumps(StepTimer.result))


class FirstStepClock(Callback):
    """Writes the wall-clock time of the end of the first optimizer step to `path`, then stops."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        with open(self.path, "w") as file:
            file.write(repr(time.time()))
        trainer.should_stop = True


class HookClock(SimpleProfiler):
    """Lightning's simple profiler without its printed report: the seconds of each of a run's actions, every
    hook of every callback among them (`[Callback]<class>.<hook>`), left in `HookClock.durations`."""

    durations: dict[str, list[float]] = {}

    def summary(self) -> str:
        HookClock.durations = {action: list(seconds) for action, seconds in self.recorded_durations.items()}
        return ""
