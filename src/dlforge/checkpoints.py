"""Checkpoints hold tensors and plain data only: they load with `torch.load(weights_only=True)` and
carry the resolved run config, from which the model is rebuilt (never unpickled)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback

from dlforge.errors import CheckpointError


class EmbedRunConfig(Callback):
    """Stores the resolved run config (a plain dict) in every checkpoint under `run_config`."""

    def __init__(self, run_config: dict[str, Any]):
        self.run_config = run_config

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint["run_config"] = self.run_config


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a dlforge checkpoint safely, or raise CheckpointError saying what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, garbage bytes, pickled objects: all unreadable here
        reason = str(error).strip().split("\n")[0][:200]
        raise CheckpointError(f"checkpoint {path} is corrupt or not a tensor-only checkpoint ({reason})") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "run_config" not in checkpoint:
        raise CheckpointError(f"checkpoint {path} was not written by dlforge (no state_dict and run_config)")
    return checkpoint
