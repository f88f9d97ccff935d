"""Exact resume: what Lightning leaves out of a checkpoint but a bit-identical continuation needs."""

from __future__ import annotations

import logging
import random
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from lightning.pytorch import Callback
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
    """

    key = "exact_resume"

    def __init__(self):
        self.pending: dict[str, Any] | None = None
        self.loader_states: list[dict[str, Any]] = []

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        state = {"rng": _rng_state(), "metrics": metric_states(pl_module)}
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
        if self.pending is not None:
            restore_metric_states(pl_module, self.pending["metrics"])
            _set_rng_state(self.pending["rng"])
            self.pending = None


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
