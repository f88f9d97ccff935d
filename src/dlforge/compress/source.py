"""Where an export or compress run starts: the checkpoint's run rebuilt (`load_run`), a trainer of the
task's config (CPU, fp32), and the checkpoint's own test metrics, the reference its exported or compressed
forms are compared with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig


@dataclass
class Source:
    run: Any  # dlforge.run.load.LoadedRun: its model is the fp32 reference
    trainer: Any  # tests the checkpoint and its variants through the objective's test step
    reference: dict[str, float]  # the checkpoint's test metrics
    provenance: dict[str, Any]  # what identifies the source run (`dlforge.compress.export.provenance`)
    run_dir: Path  # this task's run dir
    overrides: list[str]  # this task's command-line overrides, for its lineage record


def open_source(cfg: DictConfig) -> Source:
    """Rebuild the run of `cfg.ckpt_path` and test its checkpoint; Lightning's logs go to the task's run dir."""
    from hydra.core.hydra_config import HydraConfig

    from dlforge.compress.export import provenance
    from dlforge.compress.measure import test_metrics
    from dlforge.config.build import build_trainer
    from dlforge.run.load import load_run
    from dlforge.run.loggers import route_lightning_logs
    from dlforge.runtime import tune_process

    route_lightning_logs()
    tune_process()
    hydra = HydraConfig.get()
    run = load_run(cfg.ckpt_path)
    trainer = build_trainer(cfg, callbacks=[], loggers=[])
    return Source(
        run,
        trainer,
        test_metrics(trainer, run.model, run.datamodule),
        provenance(run.checkpoint, run.path),
        Path(hydra.runtime.output_dir),
        list(hydra.overrides.task),
    )
