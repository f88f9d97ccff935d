"""The pictures of runs, drawn with matplotlib's object API (no pyplot: no global figure state, no display):
a confusion matrix, images with their captions, metric curves. Shared by the loggers' media and the reports."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

Points = Sequence[tuple[float, float]]  # (step, value)


def png(figure: Figure, path: Path | None = None) -> bytes:
    """The figure as PNG bytes, also written to `path` when given. The figures set their own margins: a tight
    bounding box or a constrained layout would draw each figure twice (2.5x the time)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    data = buffer.getvalue()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return data


def confusion_matrix(matrix: np.ndarray) -> Figure:
    """Counts of (true, predicted) classes, each cell labelled when there are few enough classes to read them."""
    matrix = np.asarray(matrix)
    classes = len(matrix)
    size = min(2.5 + 0.35 * classes, 14)
    figure = Figure(figsize=(size, size))
    axes = figure.add_subplot()
    axes.imshow(matrix, cmap="Blues")
    if classes <= 30:
        threshold = matrix.max() / 2
        for (true, predicted), count in np.ndenumerate(matrix):
            color = "white" if count > threshold else "black"
            axes.text(predicted, true, str(count), ha="center", va="center", color=color, fontsize=8)
    axes.set(xlabel="predicted", ylabel="true", xticks=range(classes), yticks=range(classes))
    axes.tick_params(labelsize=7)
    figure.subplots_adjust(left=0.12, bottom=0.1, right=0.98, top=0.98)
    return figure


def heatmap(
    matrix: np.ndarray, rows: Sequence[str], columns: Sequence[str], row_title: str = "", column_title: str = ""
) -> Figure:
    """Weights in [0, 1] (rows, columns) as shades, rows labelled down the left and columns across the top
    (read as text: the source along the top, its translation down the side); sized so a cell is 0.3 in wide."""
    matrix = np.asarray(matrix)
    height, width = matrix.shape
    # margins in inches, from the longest labels (about 0.075 in per character at 8 pt)
    left = 0.35 + 0.075 * max(map(len, rows), default=0) + (0.25 if row_title else 0)
    top = 0.35 + 0.075 * max(map(len, columns), default=0) + (0.25 if column_title else 0)
    tall = max(0.3 * height, 0.075 * len(row_title) + 0.2)  # room for the row title beside a few rows
    size = (left + 0.3 * width + 0.9, top + tall + 0.2)  # 0.9 in on the right: the colour bar
    figure = Figure(figsize=size)
    inches = lambda x, y, w, h: (x / size[0], y / size[1], w / size[0], h / size[1])  # noqa: E731 - a figure's box
    axes = figure.add_axes(inches(left, 0.2, 0.3 * width, tall))
    shades = axes.imshow(matrix, cmap="Blues", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    axes.xaxis.tick_top()
    axes.xaxis.set_label_position("top")
    axes.set_xticks(range(width), columns, rotation=90, fontsize=8)
    axes.set_yticks(range(height), rows, fontsize=8)
    axes.set(xlabel=column_title, ylabel=row_title)
    bar = figure.add_axes(inches(left + 0.3 * width + 0.15, 0.2, 0.12, tall))
    figure.colorbar(shades, cax=bar).ax.tick_params(labelsize=7)
    return figure


def image_grid(images: np.ndarray, captions: Sequence[str], columns: int = 8) -> Figure:
    """Images (count, channels, height, width) in any range, each rescaled to [0, 1] and its caption above it.
    One mosaic in one axes: an axes per image made the figure 4x slower to build and draw."""
    count, channels, height, width = np.shape(images)
    columns = min(count, columns)
    rows = -(-count // columns)
    gap = max(1, width // 8)
    band = -(-width // 4)  # room for a two-line caption above each image (each image is 1.6 in wide)
    cell_height, cell_width = band + height + gap, width + gap
    mosaic = np.ones((rows * cell_height, columns * cell_width, 3), dtype=np.float32)  # white around the images
    figure = Figure(figsize=(1.6 * columns, 1.6 * columns * mosaic.shape[0] / mosaic.shape[1]))
    axes = figure.add_axes((0, 0, 1, 1))
    for index, (image, caption) in enumerate(zip(images, captions)):
        image = np.moveaxis(np.asarray(image, dtype=np.float32), 0, -1)
        low, high = image.min(), image.max()
        image = (image - low) / max(high - low, 1e-8)
        top, left = (index // columns) * cell_height + band, (index % columns) * cell_width
        mosaic[top : top + height, left : left + width] = image if channels == 3 else image[..., :1]
        axes.text(left + width / 2, top - 0.5, caption.replace(" / ", "\n"), ha="center", va="bottom", fontsize=8)
    axes.imshow(mosaic, interpolation="nearest")
    axes.axis("off")
    return figure


def curves(metrics: Mapping[str, Mapping[str, Points]], x_label: str = "step") -> Figure:
    """One panel per metric, one line per series in it (a run, say): {metric: {series: [(step, value)]}}."""
    columns = min(len(metrics), 3) or 1
    rows = -(-len(metrics) // columns) or 1
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows))
    figure.subplots_adjust(
        left=0.08, right=0.98, bottom=0.5 / (3.2 * rows), top=1 - 0.35 / (3.2 * rows), wspace=0.25, hspace=0.5
    )
    for index, (metric, series) in enumerate(sorted(metrics.items())):
        axes = figure.add_subplot(rows, columns, index + 1)
        for label, points in series.items():
            steps, values = zip(*points) if points else ((), ())
            axes.plot(steps, values, marker="." if len(points) < 30 else None, label=label)
        axes.set(title=metric, xlabel=x_label)
        axes.grid(alpha=0.3)
        if len(series) > 1:
            axes.legend(fontsize=7)
    return figure
