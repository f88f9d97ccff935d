"""Checkpoints hold tensors and plain data only: they load with `torch.load(weights_only=True)` and
carry the resolved run config, from which the model is rebuilt (never unpickled).

Every write is atomic (a temporary file in the same dir, then `os.replace`), so a kill during a save
leaves the previous file intact; a resumed run reads the newest one that loads. What is written when
is the callbacks' business (`ModelCheckpoint` for the best, `dlforge.callbacks.checkpoints` for the
training state).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from dlforge.callbacks.checkpoints import step_checkpoints
from dlforge.checkpoint_file import load_checkpoint
from dlforge.errors import CheckpointError
from dlforge.files import replacing

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the target's dir, syncs it, then renames it
    over the target: readers see the old file or the new one, never a truncated one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        _sync_dir(path.parent)


def _sync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (POSIX); a no-op where directories cannot be opened."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def newest_good_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint under `run_dir/checkpoints` that loads, passing over (and logging) corrupt
    ones: step checkpoints newest first, then `last.ckpt` and `best.ckpt` for runs without them."""
    directory = run_dir / "checkpoints"
    fallbacks = [path for path in (directory / "last.ckpt", directory / "best.ckpt") if path.is_file()]
    candidates = step_checkpoints(directory) + fallbacks
    problems = []
    for path in candidates:
        try:
            return path, load_checkpoint(path)
        except CheckpointError as error:
            log.warning(f"resume: skipping {path.name}: {error}")
            problems.append(f"{path.name}: {error}")
    found = "; ".join(problems) if problems else "none found"
    raise CheckpointError(f"no usable checkpoint to resume from in {directory} ({found})")


def checkpoint_paths(run_dir: Path, best_path: str) -> dict[str, str | list[str] | None]:
    """The best checkpoint, the newest training state (`last.ckpt`, resolved) and every file kept."""
    directory = run_dir / "checkpoints"
    last = directory / "last.ckpt"
    return {
        "best": best_path or None,
        "last": str(last.resolve()) if last.exists() else None,
        "kept": sorted(path.name for path in directory.glob("*.ckpt")) if directory.is_dir() else [],
    }
