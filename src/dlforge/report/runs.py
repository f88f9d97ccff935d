"""A finished (or stopped) run as its run dir records it: `lineage.yaml`, `metrics.json`, `curves/` and
`media/`, read without torch, for the run's report and for comparisons of runs."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dlforge.errors import UserError

Points = list[tuple[int, float]]  # (step, value)


@dataclass
class RunFiles:
    path: Path
    record: dict[str, Any]  # lineage.yaml: command, overrides, config, git, data, versions, hardware ...
    metrics: dict[str, Any]  # metrics.json: final metrics and test artifacts (a confusion matrix as lists)
    curves: dict[str, Points]  # curves/<metric>.csv
    media: list[Path]  # media/<key>.png and media/<key>.json (tables), as the objective declared them

    @property
    def config(self) -> dict[str, Any]:
        return self.record.get("config") or {}

    @property
    def scalars(self) -> dict[str, float]:
        """The final metrics that are numbers (not matrices)."""
        return {name: value for name, value in self.metrics.items() if isinstance(value, (int, float))}


def is_run_dir(path: Path) -> bool:
    return (path / "lineage.yaml").is_file()


def read_run(path: str | Path) -> RunFiles:
    path = Path(path).resolve()  # absolute, as the paths in its record
    if not is_run_dir(path):
        raise UserError(f"{path}: not a run dir (no lineage.yaml)")
    record = yaml.safe_load((path / "lineage.yaml").read_text()) or {}
    metrics_file = path / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    curves_dir = path / "curves"
    curves = {
        file.relative_to(curves_dir).with_suffix("").as_posix(): _points(file)
        for file in sorted(curves_dir.rglob("*.csv"))
    }
    media_dir = path / "media"
    media = sorted(file for file in media_dir.rglob("*") if file.suffix in (".png", ".json"))
    return RunFiles(path, record, metrics, curves, media)


def _points(file: Path) -> Points:
    with open(file, newline="") as handle:
        rows = list(csv.reader(handle))
    return [(int(step), float(value)) for _epoch, step, value in rows[1:]]
