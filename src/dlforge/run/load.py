"""Rebuilding a trained run from one of its checkpoints: every task that starts from a checkpoint
(evaluation, generation, fine-tuning, export, compression) starts from `load_run`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dlforge.checkpoint_file import datamodule_state, load_checkpoint
from dlforge.config.build import build_datamodule, build_model
from dlforge.config.trust import recorded_config
from dlforge.errors import CheckpointError, ConfigError


@dataclass
class LoadedRun:
    path: Path
    config: DictConfig  # the run's resolved config, as recorded in the checkpoint
    model: Any  # the objective (a LightningModule) with the checkpoint's weights, in eval mode
    datamodule: Any  # built from the recorded config, its saved state (a tokenizer) restored; not set up
    checkpoint: dict[str, Any]  # everything else the checkpoint holds (lineage, loops, step ...)


def load_run(path: str | Path, data_overrides: dict[str, Any] | None = None) -> LoadedRun:
    """The model, data and config of the run whose checkpoint is at `path`, rebuilt from the recorded
    config (never unpickled). A checkpoint whose weights do not fit that config, or whose config names a
    `_target_` the project does not trust (`dlforge.config.trust`), is a CheckpointError.

    `data_overrides` replace keys of the recorded data config (`{"view": "shuffled"}`: the clips with their
    frames shuffled; `{"root": ...}`: the data moved); a key the recorded config lacks is a ConfigError."""
    checkpoint = load_checkpoint(path)
    config = recorded_config(checkpoint["run_config"], path, CheckpointError)
    if data_overrides:
        if unknown := sorted(set(data_overrides) - set(config.data)):
            raise ConfigError(
                f"data.{unknown[0]}: not a key of the run's data config ({', '.join(sorted(config.data))})"
            )
        config.data = OmegaConf.merge(config.data, data_overrides)
    datamodule = build_datamodule(config)
    if state := datamodule_state(checkpoint):
        datamodule.load_state_dict(state)
    model = build_model(config, for_training=False)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit the model in its run config: {error}") from error
    return LoadedRun(Path(path), config, model.eval(), datamodule, checkpoint)
