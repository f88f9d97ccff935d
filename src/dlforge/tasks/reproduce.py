"""Repeat a recorded run and check that it comes out the same.

`python src/reproduce.py <run dir> [key=value ...]` trains the resolved config recorded in
`<run dir>/lineage.yaml` again, with its seed, in a new run dir beside it: the record becomes the
primary config of `src/train.py` (so DDP, loggers and records work as in any run), its paths under
the old run dir moved to the new one. `key=value` overrides go to train.py after it; keep them to
where and how the run logs (`logger.wandb.mode=offline`, `hydra.run.dir=...`).

Before training it warns when the code's git commit or uncommitted diff differ from the record; after,
when the data's DVC hash does. Then it compares the final metrics with the record: exit 0 and a table
when they match, exit 1 and the differing numbers when not. A run recorded on CPU must match exactly;
one recorded on GPU within a relative 1e-2 (`--tolerance`), since CUDA's kernels are not
deterministic by default.

Imports nothing heavy: the training runs in its own process.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from dlforge.config import ROOT
from dlforge.config.trust import check_recorded_targets, literal
from dlforge.errors import ConfigError, UserError
from dlforge.run.lineage import FILE_NAME, git_snapshot, read
from dlforge.run.rundir import fresh_dir, reroot

GPU_TOLERANCE = 1e-2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reproduce.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="the run to repeat (a dir with lineage.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for train.py, e.g. logger.wandb.mode=offline")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help=f"relative tolerance for the metrics (default: 0 for CPU runs, {GPU_TOLERANCE} for GPU runs)",
    )
    args = parser.parse_args(argv)
    try:
        return reproduce(args.run_dir, args.overrides, args.tolerance)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def reproduce(run_dir: Path, overrides: list[str], tolerance: float | None) -> int:
    record = _finished_record(run_dir)
    check_recorded_targets(record["config"], run_dir / FILE_NAME, ConfigError)  # before train.py builds it
    for warning in _code_differences(run_dir, record.get("git")):
        print(f"warning: {warning}", file=sys.stderr)
    if tolerance is None:
        tolerance = 0.0 if (record.get("hardware") or {}).get("accelerator") == "cpu" else GPU_TOLERANCE

    new_dir = next((o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir=")), None)
    if new_dir is None:
        new_dir = fresh_dir(str(run_dir.resolve().parent / datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")))
        overrides = [f"hydra.run.dir={new_dir}", *overrides]
    with tempfile.TemporaryDirectory(prefix="reproduce-") as config_dir:
        (Path(config_dir) / "recorded.yaml").write_text(
            yaml.safe_dump(primary_config(record["config"]), sort_keys=False)
        )
        command = [
            sys.executable,
            str(ROOT / "src" / "train.py"),
            "--config-dir",
            config_dir,
            "--config-name",
            "recorded",
            *overrides,
        ]
        print(f"reproducing {run_dir} in {new_dir}", flush=True)
        if (code := subprocess.run(command, cwd=ROOT).returncode) != 0:
            print(f"error: the reproduction failed (train.py exit {code})", file=sys.stderr)
            return code

    reproduced = read(Path(new_dir) / FILE_NAME)
    recorded_hash, new_hash = (record.get("data") or {}).get("md5"), (reproduced.get("data") or {}).get("md5")
    if recorded_hash != new_hash:
        print(f"warning: data hash differs: recorded {recorded_hash}, now {new_hash}", file=sys.stderr)
    rows = compare(record["metrics"], reproduced["metrics"], tolerance)
    _print_table(
        rows, f"{run_dir} vs {new_dir}" + (f" (relative tolerance {tolerance:g})" if tolerance else " (exact)")
    )
    mismatches = [name for name, *_, ok in rows if not ok]
    if mismatches:
        print(f"reproduction differs in: {', '.join(mismatches)}", file=sys.stderr)
        return 1
    return 0


def primary_config(config: dict[str, Any]) -> dict[str, Any]:
    """The recorded (resolved) config as a primary config for train.py: Hydra's settings from this
    project's `hydra/default`, paths under the old run dir moved to the new one, no resuming."""
    escaped = literal(config)
    escaped = reroot(escaped, literal(config["paths"]["output_dir"]), "${paths.output_dir}")
    escaped["paths"]["output_dir"] = "${hydra:runtime.output_dir}"
    escaped.update(resume=None, ckpt_path=None)
    return {"defaults": [{"hydra": "default"}, "_self_"], **escaped}


def compare(recorded: dict[str, Any], reproduced: dict[str, Any], tolerance: float) -> list[tuple[str, Any, Any, bool]]:
    """(metric, recorded, reproduced, match) for every metric in either."""
    return [
        (name, recorded.get(name), reproduced.get(name), _close(recorded.get(name), reproduced.get(name), tolerance))
        for name in sorted(set(recorded) | set(reproduced))
    ]


def _close(a: Any, b: Any, tolerance: float) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, tolerance) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return a == b or math.isclose(a, b, rel_tol=tolerance, abs_tol=0.0)
    return a == b


def _finished_record(run_dir: Path) -> dict[str, Any]:
    path = run_dir / FILE_NAME
    if not path.is_file():
        raise UserError(f"{path} not found: not a run dir, or a run from before lineage records")
    record = read(path)
    if record.get("status") != "finished" or not record.get("metrics"):
        raise UserError(
            f"{run_dir} has no final metrics (status: {record.get('status')}); "
            f"finish it first: python src/train.py resume={run_dir}"
        )
    return record


def _code_differences(run_dir: Path, recorded: dict[str, Any] | None) -> list[str]:
    current, patch = git_snapshot(ROOT)
    if recorded is None or current is None:
        return [] if recorded is current else ["git state unknown for the record or for this checkout"]
    warnings = []
    if current["commit"] != recorded["commit"]:
        warnings.append(f"git commit differs: recorded {recorded['commit']}, now {current['commit']}")
    recorded_patch = (run_dir / recorded["patch"]).read_text() if recorded.get("patch") else ""
    if patch != recorded_patch:
        warnings.append(f"uncommitted changes differ from the record's ({recorded.get('patch') or 'none'})")
    return warnings


def _print_table(rows: list[tuple[str, Any, Any, bool]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in ("metric", "recorded", "reproduced", "difference", "match"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, recorded, reproduced, ok in rows:
        numbers = isinstance(recorded, (int, float)) and isinstance(reproduced, (int, float))
        difference = f"{reproduced - recorded:.3g}" if numbers else ("" if ok else "differs")
        table.add_row(name, _shown(recorded), _shown(reproduced), difference, "yes" if ok else "NO")
    Console(width=None if sys.stdout.isatty() else 120).print(table)  # all digits, also in logs


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)  # every digit: "matches exactly" must be visible
    if isinstance(value, list):  # a confusion matrix: its size here, its values compared
        return "x".join(
            str(len(part))
            for part in (value, value[0] if value and isinstance(value[0], list) else None)
            if part is not None
        )
    return str(value)
