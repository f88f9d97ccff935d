"""Resuming a run exactly where it stopped, in its own run dir, with its recorded config.

`python src/train.py resume=<run dir>` continues from the run's newest readable checkpoint (passing
over corrupt ones); `resume=<checkpoint>` or, in Lightning's convention, `ckpt_path=<checkpoint>`
from that one. Lightning restores weights, optimizer, schedulers, loop counters and (through
`dlforge.data.tensors.ResumableLoader`) the position in the epoch; `ExactResume` adds the rest, so
the resumed run ends bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.utilities.types import _Stateful
from lightning.pytorch import Callback
from lightning.pytorch.utilities import CombinedLoader
from omegaconf import DictConfig, OmegaConf
from torchmetrics import Metric

from dlforge.checkpoint_file import load_checkpoint
from dlforge.run.checkpoints import newest_good_checkpoint
from dlforge.errors import ConfigError
from dlforge.run.rundir import reroot, resumed_run_dir

log = logging.getLogger(__name__)

# Overrides that may accompany `resume`: they say where things are, not what is trained.
RESUME_OVERRIDES = ("resume=", "ckpt_path=", "paths.")


@dataclass
class ResumePoint:
    run_dir: Path
    checkpoint_path: Path
    checkpoint: dict[str, Any]
    config: DictConfig  # the run's recorded config, its paths moved along if the run dir moved


def resume_point(source: str | None, overrides: list[str], output_dir: str, multirun: bool) -> ResumePoint | None:
    """Where `resume=<source>` continues from, or None for a new run. `output_dir` is Hydra's output
    dir of this invocation (inside the resumed run dir, or a new dir for a checkpoint outside one)."""
    if source is None:
        return None
    if multirun:
        raise ConfigError("resume continues one run; it cannot be combined with --multirun")
    changes = [override for override in overrides if not override.lstrip("+~").startswith(RESUME_OVERRIDES)]
    if changes:
        raise ConfigError(
            f"resume continues the run with its recorded config; these overrides would change it: {' '.join(changes)}"
        )
    path = Path(source)
    if path.is_dir():
        checkpoint_path, checkpoint = newest_good_checkpoint(path)
    else:
        checkpoint_path, checkpoint = path, load_checkpoint(path)
    run_dir = resumed_run_dir(source) or Path(output_dir)
    recorded = checkpoint["run_config"]
    config = OmegaConf.create(reroot(recorded, recorded["paths"]["output_dir"], str(run_dir.resolve())))
    log.info(f"resuming {run_dir} from {checkpoint_path.name} (step {checkpoint.get('global_step')})")
    return ResumePoint(run_dir, checkpoint_path, checkpoint, config)


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
        state = {"rng": _rng_state(), "metrics": _metric_states(pl_module)}
        if trainer.world_size > 1:  # every rank saves (rank 0 writes), so all take part in the gather
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, state)
            checkpoint[self.key] = gathered
        else:
            checkpoint[self.key] = [state]

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        self.loader_states = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).get("combined_loader", [])
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
            loaders = CombinedLoader(trainer.train_dataloader).flattened
            for loader, state in zip([loader for loader in loaders if isinstance(loader, _Stateful)], self.loader_states):
                loader.load_state_dict(state)
            self.loader_states = []
        if self.pending is not None:
            _set_metric_states(pl_module, self.pending["metrics"])
            _set_rng_state(self.pending["rng"])
            self.pending = None


def _rng_state() -> dict[str, Any]:
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, python_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "python": {"version": version, "state": list(python_state), "gauss": gauss},
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))


def _metric_states(module: torch.nn.Module) -> dict[str, Any]:
    return {
        name: {"state": {key: _to_cpu(value) for key, value in metric.metric_state.items()}, "updates": metric.update_count}
        for name, metric in module.named_modules()
        if isinstance(metric, Metric)
    }


def _set_metric_states(module: torch.nn.Module, states: dict[str, Any]) -> None:
    for name, metric in module.named_modules():
        if isinstance(metric, Metric) and name in states:
            for key, value in states[name]["state"].items():
                setattr(metric, key, [item.to(metric.device) for item in value] if isinstance(value, list) else value.to(metric.device))
            metric._update_count = states[name]["updates"]
            metric._computed = None


def _to_cpu(value: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    return [item.detach().cpu() for item in value] if isinstance(value, list) else value.detach().cpu()
