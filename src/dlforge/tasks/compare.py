"""Compare runs: `python src/compare.py <run dir | multirun dir | sweep dir> ...` writes one HTML page (the
config keys that differ, a metrics table, overlaid curves, a sweep's plots and trials); `--markdown` prints
the metrics table for a terminal or a pull request. Reads run dirs only: imports neither torch nor Lightning."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dlforge.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="compare.py", description=__doc__.split(":")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run dirs, multirun dirs or sweep dirs")
    parser.add_argument(
        "--output", type=Path, help="the page to write (default: comparison.html in the runs' common parent dir)"
    )
    parser.add_argument("--markdown", action="store_true", help="also print the metrics table as Markdown")
    args = parser.parse_args(argv)
    try:
        return compare(args.paths, args.output, args.markdown)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def compare(paths: list[Path], output: Path | None, as_markdown: bool) -> int:
    from dlforge.report.compare import FILE_NAME, find_runs, labels, markdown, metrics_table, write_comparison

    runs, sweeps = find_runs(paths)
    if output is None:
        output = Path(os.path.commonpath([run.path.resolve().parent for run in runs])) / FILE_NAME
    page = write_comparison(runs, sweeps, output)
    if as_markdown:
        print(markdown(*metrics_table(runs)))
    print(f"compared {len(runs)} runs ({', '.join(labels(runs))}): {page}")
    return 0
