"""The end-of-run report: a metrics table on the console and `metrics.json` in the run dir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_metrics(run_dir: str | Path, metrics: dict[str, Any]) -> Path:
    path = Path(run_dir) / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    return path


def print_summary(
    title: str,
    metrics: dict[str, float],
    paths: dict[str, str | None],
    per_class: dict[str, dict[str, float]] | None = None,
) -> None:
    """The metrics as a table, then a table of each per-class score (`test/iou`: class name -> IoU), then
    the paths."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted(metrics.items()):
        table.add_row(name, f"{value:.6g}")
    console = Console()
    console.print(table)
    for key, scores in (per_class or {}).items():
        by_class = Table(title=f"{key} by class", title_justify="left")
        by_class.add_column("class")
        by_class.add_column(key, justify="right")
        for name, value in scores.items():
            by_class.add_row(name, f"{value:.4f}")
        console.print(by_class)
    for name, path in paths.items():
        if path:
            console.print(f"{name}: {path}", highlight=False, soft_wrap=True)
