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
    columns: int = 8  # images side by side in the picture


@dataclass
class Table:
    """Rows of text, e.g. inputs with their predicted and true continuations."""

    key: str
    columns: list[str]
    rows: list[list[str]]


TestArtifact = ConfusionMatrix | ClassScores  # a union as more kinds come (PR curves ...)
Media = Images | Table


def plain_artifacts(artifacts: list[TestArtifact]) -> dict[str, Any]:
    """Artifacts as plain data, for metrics.json and the lineage record."""
    return {artifact.key: artifact.plain() for artifact in artifacts}
