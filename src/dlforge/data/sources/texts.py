"""Labelled texts for sequence classification.

PydocParagraphs (offline): the paragraphs of eight of Python's help topics (`pydoc_data.topics`), each
  labelled by its topic; no official splits.
AGNews: AG's News Corpus (4 classes: World, Sports, Business, Sci/Tech) from its published CSV files
  `root/ag_news_csv/{train,test}.csv` (rows of class 1-4, title, description), downloaded on request.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Protocol

import torch

from dlforge.data.download import DEFAULT_TIMEOUT, DownloadTimeout, fetch
from dlforge.data.sources import Source
from dlforge.errors import DataError

Texts = tuple[list[str], torch.Tensor]  # texts and their int64 labels

# The topics with the most paragraphs of their own (48-112 each, 620 in all with Python 3.11).
PYDOC_TOPICS = (
    "compound",
    "debugger",
    "formatstrings",
    "specialnames",
    "string-methods",
    "types",
    "typesmapping",
    "typesseq",
)
MIN_PARAGRAPH_CHARS = 80  # shorter pieces are mostly headings and one-line code examples
AG_NEWS_URL = "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/{split}.csv"
AG_NEWS_MD5 = {"train": "b1a00f826fdfbd249f79597b59e1dc12", "test": "d52ea96a97a2d943681189a97654912d"}


class LabelledTextSource(Source, Protocol):
    """What TextClassificationData asks of a labelled text dataset."""

    def prepare(self, root: Path, download: bool) -> None:
        """Write or fetch the dataset's files under `root`, unless they are there."""
        ...

    def load(self, root: Path, download: bool) -> tuple[Texts, Texts | None]:
        """The training split (validation is held out of it) and the official test split, None if there is none."""
        ...


class PydocParagraphs:
    """Paragraphs (blank-line separated, >= 80 chars) of PYDOC_TOPICS, labelled by their index there.
    Topics share some sections: a paragraph found under more than one topic is left out as ambiguous."""

    name = "pydoc_topics"
    needs_download = False

    def prepare(self, root: Path, download: bool) -> None:
        """Nothing to write: the text ships with Python."""

    def load(self, root: Path, download: bool) -> tuple[Texts, None]:
        from pydoc_data.topics import topics

        found_under = {}
        for topic, text in topics.items():
            for paragraph in re.split(r"\n\s*\n", text):
                paragraph = paragraph.strip()
                if len(paragraph) >= MIN_PARAGRAPH_CHARS:
                    found_under.setdefault(paragraph, set()).add(topic)
        texts, labels = [], []
        for label, topic in enumerate(PYDOC_TOPICS):
            own = [paragraph for paragraph, under in found_under.items() if under == {topic}]
            texts += own
            labels += [label] * len(own)
        return (texts, torch.tensor(labels)), None


class AGNews:
    """The official train and test splits; a text is the title and description joined by a space."""

    name = "ag_news"
    needs_download = True

    def __init__(self, download_timeout: DownloadTimeout = DEFAULT_TIMEOUT):
        self.download_timeout = download_timeout

    def prepare(self, root: Path, download: bool) -> None:
        if download:
            self.load(root, download)

    def load(self, root: Path, download: bool) -> tuple[Texts, Texts]:
        splits = []
        for split in ("train", "test"):
            path = Path(root) / "ag_news_csv" / f"{split}.csv"
            if not path.is_file():
                if not download:
                    raise DataError(f"AG News not found at {path}; set data.download=true to fetch it (needs internet)")
                fetch(AG_NEWS_URL.format(split=split), path, self.download_timeout, md5=AG_NEWS_MD5[split])
            with path.open(newline="", encoding="utf-8") as file:
                rows = list(csv.reader(file))
            try:
                labels = torch.tensor([int(label) - 1 for label, _, _ in rows])
            except ValueError as error:
                raise DataError(
                    f"{path} is not an AG News CSV (rows of class 1-4, title, description): {error}"
                ) from error
            # The published descriptions mark line breaks with a backslash.
            splits.append(([f"{title} {description}".replace("\\", " ") for _, title, description in rows], labels))
        return splits[0], splits[1]
