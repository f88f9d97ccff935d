"""Labelled texts of a `LabelledTextSource` (`dlforge.data.sources.texts`) for sequence classification,
encoded once into padded token-id tensors held in memory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch

from dlforge.constraints import Fraction, Positive
from dlforge.data.sources.texts import LabelledTextSource
from dlforge.data.tensors import SplitsData, TensorBatches, stratified_split
from dlforge.data.tokenizers import Tokenizer, TokenizerKind, pretrained_tokenizer, tokenizer_from_json, train_tokenizer
from dlforge.errors import DataError


class TextClassificationData(SplitsData):
    """Train/val/test splits of labelled texts as `(token_ids, labels)` batches: each text is encoded as
    the cls token followed by its first `max_length - 1` tokens, padded with the pad token (id 0) to the
    longest text of its split.

    The tokenizer is the one of the pretraining run in `tokenizer_from` (a checkpoint; the data configs
    take `model.pretrained`, so a fine-tuned encoder reads the ids it was pretrained on), else a new
    `tokenizer`-kind tokenizer with at most `vocab_size` ids trained on the training texts. It is this
    module's state: saved in checkpoints and checked on restore.

    `test_fraction` (of a source without an official test split) and `val_fraction` of the training
    texts are held out, stratified by class, the same for the same `split_seed`.
    `num_classes` states what the models are built for; it is checked against the data.
    """

    def __init__(
        self,
        source: LabelledTextSource,
        root: str = "data",
        download: bool = False,
        tokenizer: TokenizerKind = "char",
        vocab_size: int = 128,
        tokenizer_from: str | None = None,
        max_length: Annotated[int, Positive] = 128,
        batch_size: Annotated[int, Positive] = 32,
        eval_batch_size: Annotated[int, Positive] = 256,
        val_fraction: Annotated[float, Fraction] = 0.1,
        test_fraction: Annotated[float, Fraction] = 0.2,
        split_seed: int = 0,
        num_classes: Annotated[int, Positive] = 8,
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
        self.source.prepare(self.root, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        (texts, labels), test_texts = self.source.load(self.root, self.download)
        if test_texts is None:
            rest, test = stratified_split(labels, self.test_fraction, self.split_seed)
            test_texts = _select(texts, test), labels[test]
            texts, labels = _select(texts, rest), labels[rest]
        found = int(labels.max()) + 1
        if found != self.num_classes:
            raise DataError(f"data.num_classes is {self.num_classes} but {self.source.name} has {found} classes")
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
