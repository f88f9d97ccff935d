"""The training state a run resumes from, and stopping cleanly when the cluster asks (preemption).

`ResumeCheckpoints` writes `checkpoints/step-<step>.ckpt` (+ `last.ckpt`); SIGTERM or SIGUSR1 (SLURM's
warning before preemption) makes it save one more and end `fit` with `TrainingPreempted`, which the
run turns into a clean stop (exit 0) that `resume=<run dir>` continues.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch.callbacks import Checkpoint

STEP_CHECKPOINT = re.compile(r"step-(\d+)\.ckpt")


class TrainingPreempted(Exception):
    """Raised out of `fit` after SIGTERM/SIGUSR1 once the training state is saved: the run stops
    cleanly and `resume=<run dir>` continues it."""

    def __init__(self, signal_name: str, checkpoint: Path, step: int):
        super().__init__(f"{signal_name} at step {step}: saved {checkpoint}")
        self.signal_name, self.checkpoint, self.step = signal_name, checkpoint, step


class ResumeCheckpoints(Checkpoint):
    """The training state to resume from, as `step-<global step>.ckpt`: every `every_n_steps`
    optimizer steps and at the end of every epoch (after validation), keeping the newest `keep`;
    `last.ckpt` links to the newest. `signals` (SIGTERM, and SIGUSR1 that SLURM sends before
    preemption) save one at the next optimizer step and stop training with `TrainingPreempted`.

    No step checkpoint is written on an epoch's last batch: resuming from there would skip that
    epoch's validation (Lightning counts the epoch as done); the epoch-end checkpoint follows it.
    """

    def __init__(
        self,
        dirpath: str,
        every_n_steps: int | None = 500,
        keep: int = 2,
        signals: Sequence[Literal["SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGHUP"]] = ("SIGTERM", "SIGUSR1"),
    ):
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self.keep = keep
        self.signals = [signal.Signals[name] for name in signals]
        self.received: str | None = None  # the name of the signal that asked to stop
        self.last_saved_step = -1
        self._previous_handlers: dict[signal.Signals, Any] = {}

    @property
    def last_path(self) -> Path:
        return self.dirpath / "last.ckpt"

    def on_train_start(self, trainer, pl_module) -> None:
        # Installed here, after Lightning registered its own SIGTERM handler for the fit, which it
        # restores (with everything it found before) when the fit ends.
        if trainer.received_sigterm:
            self.received = "SIGTERM"
        if trainer.is_global_zero:  # what a kill during a save left behind
            for stale in self.dirpath.glob(".*.tmp"):
                stale.unlink()
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def on_train_end(self, trainer, pl_module) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    def _on_signal(self, signum: int, frame) -> None:
        self.received = signal.Signals(signum).name  # acted on at the next step, between batches

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # mid-accumulation: the gradients so far are not part of a checkpoint
        stop = self._stop_requested(trainer)
        if _is_last_batch_of_epoch(trainer):
            return  # see the class docstring; on_train_epoch_end saves (and stops) instead
        due = self.every_n_steps and trainer.global_step % self.every_n_steps == 0
        if due or stop:
            self._save(trainer)
        if stop:
            raise TrainingPreempted(self.received, self.last_path.resolve(), trainer.global_step)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Rank 0's progress bar has just computed (and synced) the epoch's metrics; the other ranks must
        # join those collectives before any other (Lightning#21264): reading them does. ModelCheckpoint
        # does so too, but not in fast_dev_run.
        _ = trainer.callback_metrics
        self._save(trainer)
        if self._stop_requested(trainer):
            raise TrainingPreempted(self.received, self.last_path.resolve(), trainer.global_step)

    def _stop_requested(self, trainer) -> bool:
        if trainer.world_size == 1:
            return self.received is not None
        # A signal may reach one process only (`kill <pid>`): all stop if any was asked to.
        stop = trainer.strategy.reduce_boolean_decision(self.received is not None, all=False)
        self.received = self.received or ("SIGTERM" if stop else None)
        return stop

    def _save(self, trainer) -> None:
        step = trainer.global_step
        if step == self.last_saved_step or trainer.fast_dev_run:  # as ModelCheckpoint: a dry run saves nothing
            return
        path = self.dirpath / f"step-{step:08d}.ckpt"
        trainer.save_checkpoint(path, weights_only=False)  # every rank takes part; rank 0 writes
        self.last_saved_step = step
        if trainer.is_global_zero:
            _link(path, self.last_path)
            for old in step_checkpoints(self.dirpath)[self.keep :]:
                old.unlink(missing_ok=True)


def _is_last_batch_of_epoch(trainer) -> bool:
    # lightning 2.6: the fit loop's progress tracking (public attributes, but loop internals that change
    # between releases); ModelCheckpoint reads the same flag
    return trainer.fit_loop.epoch_loop.batch_progress.is_last_batch


def _link(target: Path, link: Path) -> None:
    """Point `link` at `target` atomically (a new symlink renamed over the old one)."""
    temporary = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target.name)
    os.replace(temporary, link)


def step_checkpoints(directory: Path) -> list[Path]:
    """`step-*.ckpt` files in `directory`, newest (highest step) first."""
    found = [
        (int(match[1]), path)
        for path in directory.glob("step-*.ckpt")
        if (match := STEP_CHECKPOINT.fullmatch(path.name))
    ]
    return [path for _, path in sorted(found, reverse=True)]
