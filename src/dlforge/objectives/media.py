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
class Images:
    """Images, each with a caption (what was predicted and what was true, say)."""

    key: str
    images: torch.Tensor  # (count, channels, height, width), any range: shown rescaled to [0, 1]
    captions: list[str]


@dataclass
class Table:
    """Rows of text, e.g. inputs with their predicted and true continuations."""

    key: str
    columns: list[str]
    rows: list[list[str]]


@dataclass
class PerClass:
    """One score of each class over the test split (its IoU, say), in the summary and metrics.json by class
    name; shown as a table."""

    key: str
    names: list[str]
    scores: torch.Tensor  # (classes,)

    def plain(self) -> dict[str, float]:
        return dict(zip(self.names, self.scores.tolist()))

    def table(self) -> Table:
        rows = [[name, f"{score:.4f}"] for name, score in self.plain().items()]
        return Table(self.key, ["class", self.key.rsplit("/", 1)[-1]], rows)


TestArtifact = ConfusionMatrix | PerClass  # a union as more kinds come (PR curves ...)
Media = Images | Table


def plain_artifacts(artifacts: list[TestArtifact]) -> dict[str, Any]:
    """Artifacts as plain data, for metrics.json and the lineage record."""
    return {artifact.key: artifact.plain() for artifact in artifacts}
