"""Resuming a run exactly where it stopped, in its own run dir, with its recorded config.

`python src/train.py resume=<run dir>` continues from the run's newest readable checkpoint (passing
over corrupt ones); `resume=<checkpoint>` or, in Lightning's convention, `ckpt_path=<checkpoint>`
from that one. Lightning restores weights, optimizer, schedulers, loop counters and (through
`dlforge.data.tensors.ResumableLoader`) the position in the epoch; `dlforge.callbacks.resume.ExactResume`
adds the rest, so the resumed run ends bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dlforge.checkpoint_file import load_checkpoint
from dlforge.config.trust import recorded_config
from dlforge.errors import CheckpointError, ConfigError
from dlforge.run.checkpoints import newest_good_checkpoint
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
    moved = reroot(recorded, recorded["paths"]["output_dir"], str(run_dir.resolve()))
    config = recorded_config(moved, checkpoint_path, CheckpointError)  # refused before anything is built
    log.info(f"resuming {run_dir} from {checkpoint_path.name} (step {checkpoint.get('global_step')})")
    return ResumePoint(run_dir, checkpoint_path, checkpoint, config)
