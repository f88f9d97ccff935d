"""Validation curves as CSV files, for any run and for the DVC train stage's plots."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback


class ValidationCurves(Callback):
    """Writes each validation metric, every time it is computed, to `<directory>/<metric>.csv` (epoch,
    step, value; `val/acc` -> `val/acc.csv`): curves of any run, and the plots of the DVC train stage.

    The number of rows of each file is part of every checkpoint: a resumed run keeps the rows written up
    to its checkpoint (and drops any written after it, which it writes again) and appends."""

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

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        for name, value in sorted(trainer.callback_metrics.items()):
            if not name.startswith("val/") or value.numel() != 1:
                continue
            path = self.directory / f"{name}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a" if name in self.rows else "w") as file:
                if name not in self.rows:
                    file.write(f"epoch,step,{name}\n")
                file.write(f"{trainer.current_epoch},{trainer.global_step},{value.item()}\n")
            self.rows[name] = self.rows.get(name, 0) + 1
