"""Recording a run's lineage as it trains: the record is completed when fitting starts and travels
inside every checkpoint. The record itself is the run's (`dlforge.run.lineage`); this callback only
tells it when."""

from __future__ import annotations

from typing import Any, Protocol

from lightning.pytorch import Callback


class RunRecord(Protocol):
    def begin(self, trainer) -> None:
        """Complete the record as fitting starts (git state, hardware, W&B run) and write it."""

    def embedded(self) -> dict[str, Any]:
        """What every checkpoint carries: the resolved config under `run_config`, and the record."""


class RecordLineage(Callback):
    """Completes the run's record as fitting starts (global-zero process) and embeds it in every checkpoint."""

    def __init__(self, record: RunRecord):
        self.record = record

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit" and trainer.is_global_zero:
            self.record.begin(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint.update(self.record.embedded())
