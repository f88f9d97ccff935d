"""Batch sizes are global: `data.batch_size` and `data.eval_batch_size` count the samples of one step over
all processes, and each DDP rank takes an equal share of every batch. So the effective batch, the number
of optimizer steps and the learning-rate schedule are the same whatever the number of processes (unlike
Lightning's own convention, where a DataLoader's batch size is per device)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from dlforge.errors import ConfigError


@runtime_checkable
class GlobalBatches(Protocol):
    """A datamodule whose batch sizes are split over the processes (all of dlforge's)."""

    batch_size: int
    eval_batch_size: int


def per_process(batch_size: int, world_size: int, key: str) -> int:
    """This process's share of a `batch_size` batch; the batch must split evenly."""
    if batch_size % world_size:
        raise ConfigError(
            f"{key}={batch_size} does not split evenly over {world_size} processes (it is the batch of one step "
            f"over all of them): use a multiple of {world_size}"
        )
    return batch_size // world_size


def check_split(datamodule: Any, world_size: int) -> None:
    """Refuse batch sizes that do not split over `world_size` processes: called before fitting or testing,
    so that a bad size stops the job in one process, before any other rank starts."""
    if isinstance(datamodule, GlobalBatches):
        per_process(datamodule.batch_size, world_size, "data.batch_size")
        per_process(datamodule.eval_batch_size, world_size, "data.eval_batch_size")


def rank_and_world_size(trainer: Any) -> tuple[int, int]:
    """This process's rank and the number of processes; (0, 1) outside a trainer."""
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
