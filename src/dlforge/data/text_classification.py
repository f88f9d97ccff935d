"""Labelled text for sequence classification, encoded once into padded token-id tensors held in memory.

pydoc_topics (offline): the paragraphs of eight of Python's help topics (`pydoc_data.topics`), each
  labelled by its topic; no official splits, so stratified test and val parts are held out.
ag_news: AG's News Corpus (4 classes: World, Sports, Business, Sci/Tech) from its published CSV files
  `root/ag_news_csv/{train,test}.csv` (rows of class 1-4, title, description), downloaded on request.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Literal

import torch

from dlforge.data.tensors import InMemorySplits, TensorBatches, stratified_split
from dlforge.errors import DataError
from dlforge.data.tokenizers import pretrained_tokenizer
from dlforge.data.tokenizers import Tokenizer, TokenizerKind, tokenizer_from_json, train_tokenizer

Source = Literal["pydoc_topics", "ag_news"]
Texts = tuple[list[str], torch.Tensor]  # texts and their int64 labels

# The topics with the most paragraphs of their own (48-112 each, 620 in all with Python 3.11).
PYDOC_TOPICS = ("compound", "debugger", "formatstrings", "specialnames", "string-methods", "types", "typesmapping", "typesseq")
MIN_PARAGRAPH_CHARS = 80  # shorter pieces are mostly headings and one-line code examples
AG_NEWS_URL = "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/{split}.csv"
AG_NEWS_MD5 = {"train": "b1a00f826fdfbd249f79597b59e1dc12", "test": "d52ea96a97a2d943681189a97654912d"}


def load_pydoc_paragraphs() -> Texts:
    """Paragraphs (blank-line separated, >= 80 chars) of PYDOC_TOPICS, labelled by their index there.
    Topics share some sections: a paragraph found under more than one topic is left out as ambiguous."""
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
    return texts, torch.tensor(labels)


def load_ag_news(root: str | Path, download: bool) -> tuple[Texts, Texts]:
    """The official train and test splits; a text is the title and description joined by a space."""
    splits = []
    for split in ("train", "test"):
        path = Path(root) / "ag_news_csv" / f"{split}.csv"
        if not path.is_file():
            if not download:
                raise DataError(f"AG News not found at {path}; set data.download=true to fetch it (needs internet)")
            _download_ag_news(split, path)
        with path.open(newline="", encoding="utf-8") as file:
            rows = list(csv.reader(file))
        try:
            labels = torch.tensor([int(label) - 1 for label, _, _ in rows])
        except ValueError as error:
            raise DataError(f"{path} is not an AG News CSV (rows of class 1-4, title, description): {error}") from error
        # The published descriptions mark line breaks with a backslash.
        splits.append(([f"{title} {description}".replace("\\", " ") for _, title, description in rows], labels))
    return splits[0], splits[1]


def _download_ag_news(split: str, path: Path) -> None:
    from torchvision.datasets.utils import download_url

    try:
        download_url(AG_NEWS_URL.format(split=split), str(path.parent), path.name, md5=AG_NEWS_MD5[split])
    except (OSError, RuntimeError) as error:
        raise DataError(f"could not download AG News {split} split to {path}: {error}") from error


class TextClassificationData(InMemorySplits):
    """Train/val/test splits of labelled texts as `(token_ids, labels)` batches: each text is encoded as
    the cls token followed by its first `max_length - 1` tokens, padded with the pad token (id 0) to the
    longest text of its split.

    The tokenizer is the one of the pretraining run in `tokenizer_from` (a checkpoint; the data configs
    take `model.pretrained`, so a fine-tuned encoder reads the ids it was pretrained on), else a new
    `tokenizer`-kind tokenizer with at most `vocab_size` ids trained on the training texts. It is this
    module's state: saved in checkpoints and checked on restore.

    `test_fraction` (pydoc_topics only; ag_news has its own test split) and `val_fraction` of the
    training texts are held out, stratified by class, the same for the same `split_seed`.
    `num_classes` states what the models are built for; it is checked against the data.
    """

    def __init__(
        self,
        source: Source = "pydoc_topics",
        root: str = "data",
        download: bool = False,
        tokenizer: TokenizerKind = "char",
        vocab_size: int = 128,
        tokenizer_from: str | None = None,
        max_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int = 256,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        num_classes: int = 8,
    ):
        super().__init__()
        self.source = source
        self.root = Path(root)
        self.download = download
        self.tokenizer_kind = tokenizer
        self.vocab_size = vocab_size
        self.tokenizer_from = tokenizer_from
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.num_classes = num_classes
        self.tokenizer: Tokenizer | None = None
        self.splits: dict[str, TensorBatches] = {}

    def prepare_data(self) -> None:
        if self.source == "ag_news" and self.download:
            load_ag_news(self.root, download=True)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.source == "pydoc_topics":
            texts, labels = load_pydoc_paragraphs()
            rest, test = stratified_split(labels, self.test_fraction, self.split_seed)
            test_texts = _select(texts, test), labels[test]
            texts, labels = _select(texts, rest), labels[rest]
        else:
            (texts, labels), test_texts = load_ag_news(self.root, self.download)
        found = int(labels.max()) + 1
        if found != self.num_classes:
            raise DataError(f"data.num_classes is {self.num_classes} but {self.source} has {found} classes")
        train, val = stratified_split(labels, self.val_fraction, self.split_seed)
        train_texts = _select(texts, train)
        if self.tokenizer_from is not None:
            self._use_tokenizer(pretrained_tokenizer(self.tokenizer_from))
        else:
            self._use_tokenizer(train_tokenizer(self.tokenizer_kind, train_texts, self.vocab_size))
        self.splits = {
            "train": TensorBatches(self._encode(train_texts), labels[train]),
            "val": TensorBatches(self._encode(_select(texts, val)), labels[val]),
            "test": TensorBatches(self._encode(test_texts[0]), test_texts[1]),
        }

    def _use_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Setup and checkpoint restore both bring a tokenizer; they must agree, whichever comes first."""
        if tokenizer.vocab_size > self.vocab_size:
            raise DataError(f"the tokenizer has {tokenizer.vocab_size} ids but data.vocab_size is {self.vocab_size}")
        if self.tokenizer is not None and tokenizer != self.tokenizer:
            raise DataError("the data's tokenizer differs from the checkpoint's: the token ids would not fit the model")
        self.tokenizer = tokenizer

    def _encode(self, texts: list[str]) -> torch.Tensor:
        rows = [[Tokenizer.cls_id, *ids[: self.max_length - 1]] for ids in self.tokenizer.encode_batch(texts)]
        tokens = torch.full((len(rows), max(map(len, rows))), Tokenizer.pad_id, dtype=torch.int64)
        for tokens_row, row in zip(tokens, rows):
            tokens_row[: len(row)] = torch.tensor(row)
        return tokens

    def state_dict(self) -> dict[str, str]:
        return {"tokenizer": self.tokenizer.to_json()} if self.tokenizer is not None else {}

    def load_state_dict(self, state_dict: dict[str, str]) -> None:
        self._use_tokenizer(tokenizer_from_json(state_dict["tokenizer"]))


def _select(texts: list[str], indices: torch.Tensor) -> list[str]:
    return [texts[index] for index in indices.tolist()]
