"""Compare runs: `python src/compare.py <run dir | multirun dir | sweep dir> ...` writes one HTML page (the
config keys that differ, a metrics table, overlaid curves, a sweep's plots and trials); `--markdown` prints
the metrics table for a terminal or a pull request. Reads run dirs only: imports neither torch nor Lightning."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dlforge.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="compare.py", description=__doc__.split(":")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run dirs, multirun dirs or sweep dirs")
    parser.add_argument(
        "--output",
        type=Path,
        help="the page to write (default: comparison.html in the multirun or sweep dir when that is the one path "
        "given, else in a new outputs/compare/<time>/ under the current dir)",
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
        output = Path(default_dir(paths)) / FILE_NAME
    try:
        page = write_comparison(runs, sweeps, output)
    except OSError as error:
        raise UserError(f"cannot write {output}: {error.strerror or error}; --output names another page") from error
    if as_markdown:
        print(markdown(*metrics_table(runs)))
    print(f"compared {len(runs)} runs ({', '.join(labels(runs))}): {page}")
    return 0


def default_dir(paths: list[Path]) -> str:
    """The dir of runs given alone (a multirun or sweep: its comparison lives with it), else a new dir of
    its own: runs from different places have no common dir short of `/` to write into."""
    from dlforge.report.runs import is_run_dir
    from dlforge.run.rundir import fresh_dir

    if len(paths) == 1 and not is_run_dir(paths[0]):
        return str(paths[0])
    return fresh_dir(str(Path("outputs") / "compare" / time.strftime("%Y-%m-%d_%H-%M-%S")))
