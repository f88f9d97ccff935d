"""One page comparing runs: the config keys that differ between them (and only those), a metrics table,
every run's curves overlaid, and for an Optuna sweep its plots and trial table. Takes run dirs, multirun
dirs (their numbered jobs) and sweep dirs (their `trial_<n>` runs, `best.yaml`, `trials.csv`, plots)."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from dlforge.errors import UserError
from dlforge.report import figures, html
from dlforge.report.runs import RunFiles, is_run_dir, read_run

FILE_NAME = "comparison.html"
MISSING = "—"  # a key one run's config does not have


def find_runs(paths: Sequence[Path]) -> tuple[list[RunFiles], list[Path]]:
    """The runs under `paths` (each a run dir, or a dir of runs), in the order given, jobs in number order;
    and the sweep dirs among them (those with Optuna's `trials.csv`)."""
    runs, sweeps = [], []
    for path in paths:
        if is_run_dir(path):
            runs.append(read_run(path))
            continue
        children = sorted((child for child in _subdirs(path) if is_run_dir(child)), key=_natural)
        if not children:
            raise UserError(f"{path}: not a run dir, nor a multirun or sweep dir holding run dirs (with lineage.yaml)")
        runs += [read_run(child) for child in children]
        if (path / "trials.csv").is_file():
            sweeps.append(path)
    if len(runs) < 2 and not sweeps:
        raise UserError(f"found {len(runs)} run in {', '.join(map(str, paths))}; a comparison needs 2 or more")
    return runs, sweeps


def _subdirs(path: Path) -> list[Path]:
    if not path.is_dir():
        raise UserError(f"{path}: no such dir")
    return [child for child in path.iterdir() if child.is_dir()]


def _natural(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def labels(runs: Sequence[RunFiles]) -> list[str]:
    """Each run named by its path below the runs' common parent (`0`, `trial_3`, `runs/2026-...`)."""
    paths = [run.path.resolve() for run in runs]
    common = Path(os.path.commonpath(paths)) if len(paths) > 1 else paths[0].parent
    return [path.relative_to(common).as_posix() or path.name for path in paths]


def differing_config(runs: Sequence[RunFiles]) -> dict[str, list[Any]]:
    """The config keys (dotted) whose values differ between the runs, with each run's value. A section that
    some runs lack (a logger another run has, say) is one key, shown by its `_target_`. Values that point
    into each run's own dir (its output dir, checkpoint dir ...) differ by nature and are left out."""
    flat = [_flatten(run.config) for run in runs]
    differing = {}
    for key in sorted(set().union(*flat)):
        section = _section_missing_somewhere(key, flat)
        if section in differing:
            continue
        if section is not None:
            differing[section] = [
                config.get(f"{section}._target_", "set") if _has(config, section) else MISSING for config in flat
            ]
            continue
        values = [config.get(key, MISSING) for config in flat]
        own_dir = all(
            value == MISSING or (isinstance(value, str) and value.startswith(str(run.path)))
            for value, run in zip(values, runs)
        )
        if len({repr(value) for value in values}) > 1 and not own_dir:
            differing[key] = values
    return differing


def _has(config: dict[str, Any], section: str) -> bool:
    return any(key == section or key.startswith(f"{section}.") for key in config)


def _section_missing_somewhere(key: str, flat: Sequence[dict[str, Any]]) -> str | None:
    """The outermost section holding `key` (`logger.csv` of `logger.csv.name`) that some config lacks whole."""
    parts = key.split(".")
    for end in range(1, len(parts)):
        section = ".".join(parts[:end])
        if any(not _has(config, section) for config in flat):
            return section
    return None


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def metrics_table(runs: Sequence[RunFiles]) -> tuple[list[str], list[list[Any]]]:
    """One row per run: its label, the differing config values, its final scalar metrics."""
    differing = differing_config(runs)
    metrics = sorted(set().union(*(run.scalars for run in runs)) - {"fit seconds"})
    columns = ["run", *differing, *metrics]
    rows = [
        [label, *(values[index] for values in differing.values()), *(run.scalars.get(name) for name in metrics)]
        for index, (label, run) in enumerate(zip(labels(runs), runs))
    ]
    return columns, rows


def markdown(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table, numbers to 6 significant digits."""
    shown = lambda value: f"{value:.6g}" if isinstance(value, float) else ("" if value is None else str(value))  # noqa: E731
    lines = [list(columns), ["---"] * len(columns), *[[shown(value) for value in row] for row in rows]]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines)


def write_comparison(runs: Sequence[RunFiles], sweeps: Sequence[Path], output: Path) -> Path:
    columns, rows = metrics_table(runs)
    differing = differing_config(runs)
    names = labels(runs)
    body = [
        html.heading(f"Comparison of {len(runs)} runs", 1),
        html.table(
            ["run", "run dir", "status"], [[n, str(r.path), r.record.get("status")] for n, r in zip(names, runs)]
        ),
        html.heading("Config keys that differ"),
        html.table(["key", *names], [[key, *map(_shown, values)] for key, values in differing.items()])
        if differing
        else html.paragraph("none: the runs were configured alike"),
        html.heading("Metrics"),
        html.table(columns, rows),
    ]
    curves = overlaid_curves(runs)
    if curves:
        picture = figures.png(figures.curves(curves))
        body += [html.heading("Curves"), html.image(picture, "every run's curves, overlaid")]
    for sweep in sweeps:
        body += _sweep(sweep)
    output.parent.mkdir(parents=True, exist_ok=True)
    return html.write_page(output, f"Comparison of {len(runs)} runs", body)


def overlaid_curves(runs: Sequence[RunFiles]) -> dict[str, dict[str, list]]:
    """{metric: {run label: points}}, for every metric any run has a curve of."""
    names = labels(runs)
    return {
        metric: {name: run.curves[metric] for name, run in zip(names, runs) if metric in run.curves}
        for metric in sorted(set().union(*(run.curves for run in runs)))
    }


def _shown(value: Any) -> str:
    return (
        value
        if isinstance(value, str)
        else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    )


def _sweep(sweep: Path) -> list[str]:
    """An Optuna sweep's result, plots and trials, as its sweeper wrote them (dlforge.sweeps.study)."""
    best = yaml.safe_load((sweep / "best.yaml").read_text()) if (sweep / "best.yaml").is_file() else {}
    with open(sweep / "trials.csv", newline="") as file:
        trials = list(csv.reader(file))
    shown = [html.heading(f"Sweep {best.get('study', sweep.name)}"), html.paragraph(str(sweep), "muted")]
    if best.get("best"):
        winner = best["best"]
        overrides = " ".join(winner.get("overrides") or [])
        shown.append(html.paragraph(f"best: trial {winner['trial']}, value {winner['value']:.6g} ({overrides})"))
    shown += [html.image(plot.read_bytes(), plot.stem.replace("_", " ")) for plot in sorted(sweep.glob("*.png"))]
    shown.append(html.table(trials[0], [[_number(cell) for cell in row] for row in trials[1:]]))
    return shown


def _number(cell: str) -> Any:
    try:
        return int(cell)
    except ValueError:
        try:
            return float(cell)
        except ValueError:
            return cell
