"""The report of a compress run: one row per variant of the model, as a markdown table (`report.md`), a Rich
table on the console and a W&B table; `metrics.json` holds the same numbers in full."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dlforge.compress.measure import Latency, Parity

SETTINGS = "b{batch}/t{threads}"  # a latency setting's name: batch size and threads


@dataclass
class Row:
    variant: str
    file: str | None = None  # what would ship: a weights-only checkpoint, a quantized state dict, an ONNX model
    metric: float | None = None  # the objective's main test metric (accuracy, or the LM's loss)
    params: int | None = None
    nonzero: int | None = None
    size_bytes: int | None = None
    gzip_bytes: int | None = None
    latency: dict[str, Latency] = field(default_factory=dict)  # SETTINGS -> p50/p90
    parity: Parity | None = None  # against the fp32 checkpoint, on the whole test split
    error: str | None = None  # why the method does not apply to this model

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.parity is not None:
            data["parity"]["agreement"] = self.parity.agreement
        return data


def slower_settings(row: Row, baseline: Row) -> list[str]:
    """The latency settings at which the variant's median is above the fp32 checkpoint's."""
    return [name for name, timing in row.latency.items() if timing.p50_ms > baseline.latency[name].p50_ms]


def table(rows: list[Row], metric_name: str, tolerance: float) -> tuple[list[str], list[list[str]]]:
    """Columns and formatted cells; latency as p50/p90 ms, and where a variant is slower than fp32, which settings."""
    baseline = rows[0]
    settings = list(baseline.latency)
    columns = [
        "variant",
        metric_name,
        f"Δ {metric_name}",
        "params",
        "nonzero",
        "size",
        "gzipped",
        *[f"{name} p50/p90 ms" for name in settings],
        "predictions = fp32",
        "max |Δ logit|",
        "notes",
    ]
    cells = []
    for row in rows:
        if row.error is not None:
            cells.append([row.variant, *[""] * (len(columns) - 2), f"does not apply: {row.error}"])
            continue
        notes = []
        if row is not baseline and (slower := slower_settings(row, baseline)):
            notes.append(f"slower than fp32 at {', '.join(slower)}")
        if row.parity is not None and row.variant.startswith("onnx fp32"):
            notes.append("export parity " + ("holds" if row.parity.holds(tolerance) else "FAILS"))
        cells.append(
            [
                row.variant,
                f"{row.metric:.4f}",
                f"{row.metric - baseline.metric:+.4f}",
                f"{row.params:,}",
                f"{row.nonzero:,}",
                _bytes(row.size_bytes),
                _bytes(row.gzip_bytes),
                *[f"{row.latency[name].p50_ms:.3g} / {row.latency[name].p90_ms:.3g}" for name in settings],
                f"{row.parity.agreement:.2%}" if row.parity else "",
                f"{row.parity.max_abs_diff:.2g}" if row.parity else "",
                "; ".join(notes),
            ]
        )
    return columns, cells


def markdown(columns: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def print_table(title: str, columns: list[str], cells: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    rich_table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        rich_table.add_column(column, justify="left" if index in (0, len(columns) - 1) else "right")
    for row in cells:
        rich_table.add_row(*row)
    Console(width=max(200, Console().width)).print(rich_table)


def _bytes(count: int) -> str:
    return f"{count / 1024:,.1f} KiB" if count < 1 << 20 else f"{count / (1 << 20):,.2f} MiB"
