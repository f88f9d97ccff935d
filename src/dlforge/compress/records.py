"""What an export or compress run leaves beside its files: `metrics.json` and its lineage record, which
names the source run (`provenance`), so a shipped model can be traced to the run that trained it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dlforge.config.build import plain
from dlforge.run.lineage import Lineage, hardware
from dlforge.run.summary import write_metrics


def record_run(
    run_dir: Path,
    cfg: DictConfig,
    overrides: list[str],
    trainer,
    source: dict[str, Any],
    metrics: dict[str, Any],
    wandb_logger=None,
) -> None:
    """`metrics.json` and `lineage.yaml` (config, git state, hardware, source run, metrics) in `run_dir`, and
    the same record as the W&B run's config when there is a `wandb_logger`."""
    write_metrics(run_dir, metrics)
    lineage = Lineage.start(run_dir, plain(cfg), overrides)
    lineage.record["source"] = source
    wandb_run = wandb_logger.experiment if wandb_logger is not None else None
    lineage.begin(hardware(trainer), wandb_run)
    lineage.finish("finished", metrics=metrics, wandb_run=wandb_run)
