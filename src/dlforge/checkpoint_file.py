"""Reading a dlforge checkpoint: tensors and plain data only (`torch.load(weights_only=True)`), with
the resolved run config under `run_config`. Every layer that reads checkpoints (tasks, fine-tuning,
a pretrained tokenizer) reads them here; writing them is the run's business (`dlforge.run.checkpoints`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dlforge.errors import CheckpointError


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


def datamodule_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The datamodule's `state_dict()` saved in the checkpoint (a tokenizer, say): Lightning stores it
    under the datamodule class's name, which the run config's `data._target_` ends with."""
    return checkpoint.get(checkpoint["run_config"]["data"]["_target_"].rsplit(".", 1)[-1], {})
