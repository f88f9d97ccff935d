"""`report.html`: everything about one run on one page, written into the run dir at the end of every
run: what was run (command, overrides), the final metrics, the curves, the test artifacts (a confusion
matrix with its per-class table), the sample predictions or text the objective showed, the lineage
(commit, data hash, versions, hardware) and the resolved config. Built from the run dir's files alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dlforge.report import figures, html
from dlforge.report.runs import RunFiles, read_run

FILE_NAME = "report.html"


def write_run_report(run_dir: str | Path) -> Path:
    run = read_run(run_dir)
    record = run.record
    title = f"{run.config.get('task_name', 'run')}: {_model_name(run.config)}"
    body = [
        html.heading(title, 1),
        html.paragraph(f"{run.path} — {_status(record)}, {_period(record)}", "muted"),
        html.heading("Command"),
        html.preformatted(record.get("command", "")),
        html.paragraph("overrides: " + (" ".join(record.get("overrides") or []) or "none")),
        html.heading("Final metrics"),
        html.table(["metric", "value"], sorted(run.scalars.items())) if run.scalars else html.paragraph("none"),
        *_curves(run),
        *_media(run),
        html.heading("Lineage"),
        html.table(["record", "value"], _lineage_rows(record)),
        html.heading("Config"),
        html.details("the resolved config", html.preformatted(yaml.safe_dump(run.config, sort_keys=False))),
    ]
    return html.write_page(run.path / FILE_NAME, title, body)


def _model_name(config: dict[str, Any]) -> str:
    model = config.get("model") or {}
    short = lambda target: str(target).rsplit(".", 1)[-1]  # noqa: E731
    return f"{short(model.get('_target_'))} of {short((model.get('net') or {}).get('_target_'))}"


def _status(record: dict[str, Any]) -> str:
    """`finished`, or `pruned`/`interrupted` with why."""
    status = record.get("status", "unknown")
    return f"{status} ({record['error']})" if record.get("error") else status


def _period(record: dict[str, Any]) -> str:
    return f"started {record.get('started')}, ended {record.get('ended')}"


def _curves(run: RunFiles) -> list[str]:
    if not run.curves:
        return []
    figure = figures.curves({metric: {"": points} for metric, points in run.curves.items()})
    return [html.heading("Curves"), html.image(figures.png(figure), "metric curves by step")]


def _media(run: RunFiles) -> list[str]:
    """The objective's pictures (with a per-class table under a confusion matrix) and text samples."""
    media_dir = run.path / "media"
    shown = []
    for path in run.media:
        key = path.relative_to(media_dir).with_suffix("").as_posix()
        if path.suffix == ".png":
            shown.append(html.image(path.read_bytes(), key))
            matrix = run.metrics.get(key)
            if _is_matrix(matrix):
                shown.append(html.table(*_per_class(np.asarray(matrix))))
        else:
            samples = json.loads(path.read_text())
            columns = samples["columns"]
            shown += [html.heading(key, 3), html.table(columns, samples["rows"], text_columns=columns)]
    return [html.heading("Test artifacts and samples"), *shown] if shown else []


def _is_matrix(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(row, list) and len(row) == len(value) for row in value)
    )


def _per_class(matrix: np.ndarray) -> tuple[list[str], list[list[Any]]]:
    """Precision, recall and F1 of each class from a confusion matrix (rows true, columns predicted)."""
    correct, true, predicted = np.diag(matrix), matrix.sum(1), matrix.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, correct / predicted, 0.0)
        recall = np.where(true > 0, correct / true, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    rows = [
        [index, int(true[index]), float(precision[index]), float(recall[index]), float(f1[index])]
        for index in range(len(matrix))
    ]
    return ["class", "support", "precision", "recall", "f1"], rows


def _lineage_rows(record: dict[str, Any]) -> list[list[str]]:
    git, data = record.get("git") or {}, record.get("data") or {}
    hardware = record.get("hardware") or {}
    changes = f", uncommitted changes in {git.get('patch')}" if git.get("dirty") else ""
    verified = "verified" if data.get("verified") else "not verified"
    rows = {
        "git commit": f"{git.get('commit')} ({git.get('branch')}{changes})",
        "data": f"{data.get('md5')} ({verified} against data.dvc), {data.get('data_dir')}",
        "seed": record.get("seed"),
        "hardware": ", ".join(f"{key} {value}" for key, value in hardware.items() if value not in (None, [], "")),
        "versions": ", ".join(f"{name} {version}" for name, version in (record.get("versions") or {}).items()),
        "checkpoints": ", ".join(f"{name}: {path}" for name, path in (record.get("checkpoints") or {}).items()),
        "W&B run": (record.get("wandb") or {}).get("path"),
        "MLflow run": (record.get("mlflow") or {}).get("run_id"),
    }
    return [[name, "" if value is None else str(value)] for name, value in rows.items()]
