"""Sentence pairs for translation: each source gives its train, val and test pairs (source text, target text).

NumberPhrases (offline, deterministic): English number phrases and their German or French form, written by
  PyPI's `num2words`: cardinals, ordinals, years and euro amounts, whose translation reorders the parts
  ("twenty-one" -> "einundzwanzig", "ninety-seven" -> "quatre-vingt-dix-sept").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from dlforge.data.files import preparing, reading, staged_dir
from dlforge.data.sources import Source

Pairs = tuple[list[str], list[str]]  # source texts, target texts
PAIRS_FILE, MANIFEST_FILE = "pairs.json", "manifest.json"


class ParallelSource(Source, Protocol):
    """What ParallelData asks of a set of sentence pairs."""

    def prepare(self, root: Path, download: bool) -> None:
        """Write or fetch the pairs' files under `root`, unless they are there."""
        ...

    def load(self, root: Path, download: bool) -> dict[str, Pairs]:
        """The "train", "val" and "test" pairs."""
        ...


def prepare_pairs(directory: Path, make: Callable[[], tuple[dict[str, Pairs], dict[str, Any]]]) -> None:
    """Write the pairs and manifest that `make` returns into `directory`, unless it holds them: one process
    at a time, the dir replaced whole (`dlforge.data.files`)."""
    if (directory / PAIRS_FILE).is_file():
        return
    with preparing(directory):
        if (directory / PAIRS_FILE).is_file():
            return
        splits, manifest = make()
        with staged_dir(directory) as staged:
            plain = {split: {"source": sources, "target": targets} for split, (sources, targets) in splits.items()}
            (staged / PAIRS_FILE).write_text(json.dumps(plain, ensure_ascii=False))
            (staged / MANIFEST_FILE).write_text(json.dumps(manifest, ensure_ascii=False, indent=1))


def read_pairs(directory: Path) -> dict[str, Pairs]:
    path = directory / PAIRS_FILE
    with reading(path):
        plain = json.loads(path.read_text())
        return {split: (plain[split]["source"], plain[split]["target"]) for split in ("train", "val", "test")}


NUMBER_KINDS = ("cardinal", "ordinal", "year", "currency")


def number(kind: str, generator: np.random.Generator) -> int | float:
    """A number of `kind`: cardinals up to 10 million (log-uniform in their count of digits, so millions, which
    are words of their own in German and French, are common), ordinals up to 100,000, years 1100-2099, euro
    amounts up to 10,000 with cents."""
    if kind == "cardinal":
        return int(generator.integers(0, 10 ** int(generator.integers(1, 8))))
    if kind == "ordinal":
        return int(generator.integers(1, 10 ** int(generator.integers(1, 6))))
    if kind == "year":
        return int(generator.integers(1100, 2100))
    return round(float(generator.integers(1, 10 ** int(generator.integers(1, 7)))) / 100, 2)


class NumberPhrases:
    """`train_size`, `val_size` and `test_size` distinct English phrases and their translations, drawn from a
    generator seeded by `seed`: the same pairs on every machine (given num2words' version). A phrase is in one
    split only."""

    needs_download = False

    def __init__(
        self,
        language: Literal["de", "fr"] = "de",
        train_size: int = 20000,
        val_size: int = 500,
        test_size: int = 1000,
        seed: int = 0,
    ):
        self.language = language
        self.sizes = {"test": test_size, "val": val_size, "train": train_size}
        self.seed = seed
        self.name = f"numbers_en_{language}"

    def directory(self, root: Path) -> Path:
        sizes = "-".join(f"{split}{size}" for split, size in self.sizes.items())
        return root / self.name / f"seed{self.seed}-{sizes}"

    def prepare(self, root: Path, download: bool) -> None:
        """The pairs, written once: num2words takes ~10 s for the 21,500 default pairs."""
        prepare_pairs(self.directory(root), lambda: (self._pairs(), {"num2words": version("num2words")}))

    def load(self, root: Path, download: bool) -> dict[str, Pairs]:
        self.prepare(root, download)
        return read_pairs(self.directory(root))

    def _pairs(self) -> dict[str, Pairs]:
        from num2words import num2words

        generator = np.random.default_rng(self.seed)
        pairs: dict[str, str] = {}
        while len(pairs) < sum(self.sizes.values()):
            kind = NUMBER_KINDS[int(generator.integers(len(NUMBER_KINDS)))]
            value = number(kind, generator)
            pairs.setdefault(num2words(value, lang="en", to=kind), num2words(value, lang=self.language, to=kind))
        phrases, splits, start = list(pairs), {}, 0
        for split, size in self.sizes.items():
            chosen = phrases[start : start + size]
            splits[split] = (chosen, [pairs[phrase] for phrase in chosen])
            start += size
        return splits
