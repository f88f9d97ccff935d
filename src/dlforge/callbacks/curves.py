"""Validation curves as CSV files, for any run and for the DVC train stage's plots."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback


class ValidationCurves(Callback):
    """Writes each validation metric, every time it is computed, to `<directory>/<metric>.csv` (epoch,
    step, value; `val/acc` -> `val/acc.csv`): curves of any run, and the plots of the DVC train stage."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.started: set[str] = set()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        for name, value in sorted(trainer.callback_metrics.items()):
            if not name.startswith("val/") or value.numel() != 1:
                continue
            path = self.directory / f"{name}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a" if name in self.started else "w") as file:
                if name not in self.started:
                    file.write(f"epoch,step,{name}\n")
                file.write(f"{trainer.current_epoch},{trainer.global_step},{value.item()}\n")
            self.started.add(name)
