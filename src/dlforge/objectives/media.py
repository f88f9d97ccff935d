"""What objectives show about themselves beyond scalar metrics, in plain types that no logger owns:
test artifacts (recorded with the run's final metrics) and sample media (shown by loggers). Loggers
turn each type into their own format (`dlforge.callbacks.media`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class ConfusionMatrix:
    """Counts of (true class, predicted class) over the test split."""

    key: str
    matrix: torch.Tensor  # (classes, classes): rows true, columns predicted

    def plain(self) -> list[list[int]]:
        return self.matrix.tolist()


@dataclass
class ClassScores:
    """One score per class over the test split (average precision, IoU ...), by class name."""

    key: str
    metric: str  # what the scores are, e.g. "AP"
    scores: dict[str, float]

    def plain(self) -> dict[str, float]:
        return dict(self.scores)

    def table(self) -> Table:
        return Table(self.key, ["class", self.metric], [[name, f"{score:.4f}"] for name, score in self.scores.items()])


@dataclass
class Images:
    """Images, each with a caption (what was predicted and what was true, say)."""

    key: str
    images: torch.Tensor  # (count, channels, height, width), any range: shown rescaled to [0, 1]
    captions: list[str]
    columns: int = 8  # of the grid they are shown in (in files)


@dataclass
class Audio:
    """Sound clips, each with a caption (what was heard and what was said, say)."""

    key: str
    waves: torch.Tensor  # (count, samples) mono, in [-1, 1]
    sample_rate: int
    captions: list[str]


@dataclass
class Table:
    """Rows of text, e.g. inputs with their predicted and true continuations."""

    key: str
    columns: list[str]
    rows: list[list[str]]


@dataclass
class Heatmap:
    """A matrix of weights in [0, 1] with a label for each row and column: what a decoder's tokens (rows)
    attend to among the source's (columns), say."""

    key: str
    matrix: torch.Tensor  # (rows, columns)
    rows: list[str]
    columns: list[str]
    axes: tuple[str, str] = ("", "")  # what the rows and the columns are


TestArtifact = ConfusionMatrix | ClassScores  # a union as more kinds come (PR curves ...)
Media = Images | Audio | Table | Heatmap


def plain_artifacts(artifacts: list[TestArtifact]) -> dict[str, Any]:
    """Artifacts as plain data, for metrics.json and the lineage record."""
    return {artifact.key: artifact.plain() for artifact in artifacts}
