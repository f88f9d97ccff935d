"""Sentence pairs of a `ParallelSource` (`dlforge.data.sources.parallel`) for sequence-to-sequence models,
encoded with one BPE vocabulary shared by both languages into padded token-id tensors held in memory."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Optional

import torch
from torch.utils.data import DataLoader

from dlforge.constraints import Positive
from dlforge.data.sources.parallel import ParallelSource
from dlforge.data.tensors import SplitsData, TensorBatches, batch_loader
from dlforge.data.tokenizers import Tokenizer, tokenizer_from_json, train_tokenizer
from dlforge.errors import DataError


class ParallelData(SplitsData):
    """Train/val/test `(source, target)` batches: a source is its first `max_length - 1` tokens and eos, a
    target the start (cls) token, its first `max_length - 2` tokens and eos; both padded with id 0 to the
    longest of their split (the objective trims each batch to its own longest).

    `max_pairs` keeps the first that many pairs of each split (quick runs and tests; null: all of them).
    `group_by_length` batches training pairs of similar length together (`LengthGroupedShuffle`): a batch is
    trimmed to its longest pair, so this cuts the padding computed (a gettext step costs 0.41-0.49 of an
    ungrouped one: BENCHMARKS.md).

    The tokenizer is byte-level BPE with at most `vocab_size` ids, trained on the training pairs of both
    languages (one vocabulary, so a net shares one embedding between them). It is this module's state, with
    the corpus' sha256 (of all pairs): both are saved in checkpoints, and a machine whose source gives other
    pairs than the run's (other gettext catalogs installed, say) is told so when it restores one. A fit writes
    `corpus.json` into the run dir: the hash, the pair counts and the source's manifest (what the pairs were
    made from).
    """

    def __init__(
        self,
        source: ParallelSource,
        root: str = "data",
        download: bool = False,
        vocab_size: int = 1000,
        max_length: Annotated[int, Positive] = 64,
        batch_size: Annotated[int, Positive] = 64,
        eval_batch_size: Annotated[int, Positive] = 250,
        max_pairs: Optional[Annotated[int, Positive]] = None,
        group_by_length: bool = True,
    ):
        super().__init__()
        self.source = source
        self.root = Path(root)
        self.download = download
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.max_pairs = max_pairs
        self.group_by_length = group_by_length
        self.tokenizer: Tokenizer | None = None
        self.corpus_sha256: str | None = None
        self.recorded_corpus_sha256: str | None = None  # a restored checkpoint's
        self.splits: dict[str, TensorBatches] = {}

    def prepare_data(self) -> None:
        self.source.prepare(self.root, self.download)

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self._load()
        if stage == "fit" and self.trainer is not None and self.trainer.is_global_zero:
            run_dir = Path(self.trainer.default_root_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "tokenizer.json").write_text(self.tokenizer.to_json())
            corpus = {**self._corpus(), "manifest": self.source.manifest(self.root)}
            (run_dir / "corpus.json").write_text(json.dumps(corpus, ensure_ascii=False, indent=1))

    def data_record(self) -> dict[str, Any]:
        """`dlforge.run.lineage.RecordsData`: corpus.json's hash and pair counts, and its manifest with each list
        of records (gettext's catalogs) as their number: the lineage travels in every checkpoint."""
        manifest = self.source.manifest(self.root)
        listings = {key: len(value) for key, value in manifest.items() if _records(value)}
        return {**self._corpus(), "manifest": {**manifest, **listings}, "details": "corpus.json"}

    def _corpus(self) -> dict[str, Any]:
        counts = {split: len(batches) for split, batches in self.splits.items()}
        return {"source": self.source.name, "sha256": self.corpus_sha256, "pairs": counts}

    def _load(self) -> None:
        pairs = self.source.load(self.root, self.download)
        if self.max_pairs is not None:
            pairs = {
                split: (sources[: self.max_pairs], targets[: self.max_pairs])
                for split, (sources, targets) in pairs.items()
            }
        for split, (sources, _) in pairs.items():
            if not sources:
                raise DataError(f"{self.source.name} has no {split} pairs")
        self.corpus_sha256 = hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode()).hexdigest()
        self._check_corpus()
        train_sources, train_targets = pairs["train"]
        self._use_tokenizer(train_tokenizer("bpe", [*train_sources, *train_targets], self.vocab_size))
        self.splits = {
            split: TensorBatches(self._encode(sources, start=False), self._encode(targets, start=True))
            for split, (sources, targets) in pairs.items()
        }

    def loader(self, dataset: TensorBatches, batch_size: int, shuffle: bool, rank: int, world_size: int) -> DataLoader:
        lengths = None
        if shuffle and self.group_by_length:
            lengths = sum((tokens != Tokenizer.pad_id).sum(1) for tokens in dataset.tensors)  # source + target
        return batch_loader(dataset, batch_size, shuffle, rank, world_size, group_lengths=lengths)

    def _check_corpus(self) -> None:
        """The pairs set up here are those a restored checkpoint's run was trained on, if both are known."""
        made, recorded = self.corpus_sha256, self.recorded_corpus_sha256
        if made is not None and recorded is not None and made != recorded:
            raise DataError(
                f"{self.source.name}: this machine makes other pairs (corpus sha256 {made[:12]}) than the run was "
                f"trained on ({recorded[:12]}); the run dir's corpus.json lists what its pairs were made from (for "
                f"gettext: the catalogs and their package versions), {self.root / self.source.name} this machine's"
            )

    def _use_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Setup and checkpoint restore both bring a tokenizer; they must agree, whichever comes first."""
        if self.tokenizer is not None and tokenizer != self.tokenizer:
            raise DataError(
                f"the tokenizer trained on {self.source.name}'s pairs differs from the checkpoint's (the pairs "
                "changed?): the token ids would not fit the model"
            )
        self.tokenizer = tokenizer

    def _encode(self, texts: list[str], start: bool) -> torch.Tensor:
        head = [Tokenizer.cls_id] if start else []
        rows = [
            [*head, *ids[: self.max_length - 1 - len(head)], Tokenizer.eos_id]
            for ids in self.tokenizer.encode_batch(texts)
        ]
        tokens = torch.full((len(rows), max(map(len, rows))), Tokenizer.pad_id, dtype=torch.int64)
        for tokens_row, row in zip(tokens, rows):
            tokens_row[: len(row)] = torch.tensor(row)
        return tokens

    def state_dict(self) -> dict[str, str]:
        if self.tokenizer is None:
            return {}
        return {"tokenizer": self.tokenizer.to_json(), "corpus_sha256": self.corpus_sha256}

    def load_state_dict(self, state_dict: dict[str, str]) -> None:
        self.recorded_corpus_sha256 = state_dict["corpus_sha256"]
        self._check_corpus()
        self._use_tokenizer(tokenizer_from_json(state_dict["tokenizer"]))


def _records(value: Any) -> bool:
    """A mapping of records (name -> fields), such as a manifest's catalogs."""
    return isinstance(value, dict) and any(isinstance(item, dict) for item in value.values())
