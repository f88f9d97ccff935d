"""Metric curves as CSV files, for any run's report and for the DVC train stage's plots."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback

from dlforge.objectives.metrics import logs_written_this_step


class MetricCurves(Callback):
    """Writes each validation metric, every time it is computed, and the training loss, on the steps whose
    logs Lightning writes (every `trainer.log_every_n_steps`), to `<directory>/<metric>.csv` (epoch, step,
    value; `val/acc` -> `val/acc.csv`): the curves of the run's report, and the plots of the DVC train stage.

    The number of rows of each file is part of every checkpoint: a resumed run keeps the rows written up
    to its checkpoint (and drops any written after it, which it writes again) and appends."""

    TRAINING = "train/loss"  # what every objective logs while training (`objectives.metrics.log_train_loss`)

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.rows: dict[str, int] = {}  # metric -> rows written
        self.restored: dict[str, int] | None = None

    def state_dict(self) -> dict[str, dict[str, int]]:
        return {"rows": dict(self.rows)}

    def load_state_dict(self, state: dict[str, dict[str, int]]) -> None:
        self.restored = state["rows"]

    def on_train_start(self, trainer, pl_module) -> None:
        if self.restored is None:
            return
        self.rows, self.restored = self.restored, None
        if trainer.is_global_zero:
            for name, count in self.rows.items():
                path = self.directory / f"{name}.csv"
                path.write_text("".join(path.read_text().splitlines(keepends=True)[: 1 + count]))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.is_global_zero and logs_written_this_step(pl_module):
            value = trainer.callback_metrics.get(self.TRAINING)
            if value is not None:
                self._append(trainer, self.TRAINING, value.item())

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        for name, value in sorted(trainer.callback_metrics.items()):
            if name.startswith("val/") and value.numel() == 1:
                self._append(trainer, name, value.item())

    def _append(self, trainer, name: str, value: float) -> None:
        path = self.directory / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a" if name in self.rows else "w") as file:
            if name not in self.rows:
                file.write(f"epoch,step,{name}\n")
            file.write(f"{trainer.current_epoch},{trainer.global_step},{value}\n")
        self.rows[name] = self.rows.get(name, 0) + 1
