"""The end-of-run report: a metrics table on the console and `metrics.json` in the run dir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_metrics(run_dir: str | Path, metrics: dict[str, Any]) -> Path:
    path = Path(run_dir) / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    return path


def print_summary(title: str, metrics: dict[str, Any], paths: dict[str, str | None]) -> None:
    """The scalar metrics in one table, then each per-class score (a dict of class name -> score) in its own."""
    from rich.console import Console
    from rich.table import Column, Table

    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    per_class = []
    for name, value in sorted(metrics.items()):
        if isinstance(value, dict):
            per_class.append(Table("class", Column("value", justify="right"), title=name, title_justify="left"))
            for class_name, score in value.items():
                per_class[-1].add_row(class_name, f"{score:.4f}")
        else:
            table.add_row(name, f"{value:.6g}")
    console = Console()
    console.print(table)
    for class_table in per_class:
        console.print(class_table)
    for name, path in paths.items():
        if path:
            console.print(f"{name}: {path}", highlight=False, soft_wrap=True)
