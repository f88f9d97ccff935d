"""Language-modelling data: a corpus (a `CorpusSource`, `dlforge.data.sources.corpora`) cut into
contiguous train/val/test parts, a tokenizer trained on the train part, and each part's token stream
written once as a flat memory-mapped array under `root/<corpus name>/<tokenizer>-<vocab_size>/`.
Batches are sliced straight from the maps, so a stream larger than RAM works, and are `(inputs, targets)`
int64 tensors of shape (batch, block_size) with targets shifted one token ahead.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from abc import abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, IterableDataset

from dlforge.constraints import Fraction, Positive
from dlforge.data.files import preparing, reading, staged_dir
from dlforge.data.sharding import per_process, rank_and_world_size
from dlforge.data.sources.corpora import CorpusSource
from dlforge.data.tokenizers import Tokenizer, TokenizerKind, tokenizer_from_json, train_tokenizer
from dlforge.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
# The split every prepared dir was made with before its name showed the split; it still shows none.
DEFAULT_FRACTIONS = {"val": 0.05, "test": 0.05}
Batch = tuple[torch.Tensor, torch.Tensor]


def _shifted(windows: np.ndarray) -> Batch:
    """Windows of block_size + 1 tokens -> (inputs, targets), the targets one token ahead."""
    windows = torch.from_numpy(windows.astype(np.int64))
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


class BatchStream(IterableDataset):
    """Whole batches of one epoch, resumable mid-epoch: `state_dict` holds the epoch and how many of its
    batches were handed out, `load_state_dict` makes the next pass over that same epoch skip them (a pass
    over another epoch starts at its first batch). `epoch` tells a pass which epoch it serves, read when
    the pass starts: a loader made before a resumed run's loops are restored sees epoch 0 otherwise."""

    def __init__(self, epoch: Callable[[], int]):
        self.epoch = epoch
        self.state = {"epoch": 0, "position": 0}
        self.resume_from: dict[str, int] | None = None

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.epoch()
        resume, self.resume_from = self.resume_from, None
        skip = resume["position"] if resume and resume["epoch"] == epoch else 0
        self.state = {"epoch": epoch, "position": skip}
        for batch in self.batches(epoch, skip):
            self.state["position"] += 1  # before the yield: the batch is handed out
            yield batch

    @abstractmethod
    def batches(self, epoch: int, skip: int) -> Iterator[Batch]:
        """The batches of `epoch` after its first `skip`."""

    def state_dict(self) -> dict[str, int]:
        return dict(self.state)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume_from = state


class StreamLoader(DataLoader):
    """A DataLoader of a `BatchStream` (whole batches, no collation) with its state: Lightning saves the
    state of loaders with these two methods in checkpoints, and `ExactResume` hands it back before the
    resumed run's first batch. Its own generator gives each pass its base seed: drawn from the global RNG,
    that would take a draw from the augmentation's and dropout's stream at every epoch start, which a
    run resumed at an epoch's end makes before its RNG states are restored."""

    def __init__(self, dataset: BatchStream, **options):
        # `options`: the DataLoader arguments Lightning passes when it rebuilds a loader (overfit_batches)
        super().__init__(dataset, **{"batch_size": None, "generator": torch.Generator(), **options})

    def state_dict(self) -> dict[str, int]:
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.dataset.load_state_dict(state)


class RandomWindows(BatchStream):
    """`num_batches` batches per epoch of windows at uniformly random offsets (GPT training).

    The windows of each epoch are drawn from their own generator seeded by (seed, epoch), whole batches of
    `batch_size * world_size` windows at a time; rank r of a DDP job takes the r-th `batch_size` of each.
    So the ranks' batches together are those of a one-process run, and a resumed run gets the same ones as
    an uninterrupted run.
    """

    def __init__(
        self,
        stream: np.ndarray,
        block_size: int,
        batch_size: int,
        num_batches: int,
        seed: int,
        epoch: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        super().__init__(epoch)
        if len(stream) <= block_size:
            raise DataError(
                f"the training stream has {len(stream)} tokens, fewer than block_size + 1 = {block_size + 1}"
            )
        self.stream, self.block_size, self.batch_size = stream, block_size, batch_size
        self.num_batches, self.seed = num_batches, seed
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return self.num_batches

    def batches(self, epoch: int, skip: int) -> Iterator[Batch]:
        generator = np.random.default_rng([self.seed, epoch])
        offsets = np.arange(self.block_size + 1)
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        for index in range(self.num_batches):
            starts = generator.integers(0, len(self.stream) - self.block_size, size=self.batch_size * self.world_size)
            if index >= skip:  # skipped batches are drawn all the same: the generator moves on
                yield _shifted(self.stream[starts[mine, None] + offsets])


class ContiguousRows(BatchStream):
    """The stream cut into `batch_size * world_size` equal rows (the global batch), `batch_size` of them
    per rank, so the ranks together read what one process would; batch k
    holds the k-th window of each of the rank's rows, so every row continues in the next batch: the
    ordering a model that carries memory across batches needs (Transformer-XL, RNNs). Up to one window
    per row at the end of the stream is left out."""

    def __init__(
        self,
        stream: np.ndarray,
        block_size: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        epoch: Callable[[], int] = lambda: 0,
    ):
        super().__init__(epoch)
        rows = batch_size * world_size
        row_length = len(stream) // rows
        self.rows = stream[: rows * row_length].reshape(rows, row_length)[rank * batch_size : (rank + 1) * batch_size]
        self.block_size = block_size

    def __len__(self) -> int:
        return max(0, self.rows.shape[1] - 1) // self.block_size

    def batches(self, epoch: int, skip: int) -> Iterator[Batch]:
        for start in range(skip * self.block_size, len(self) * self.block_size, self.block_size):
            yield _shifted(self.rows[:, start : start + self.block_size + 1])


class LanguageModelData(LightningDataModule):
    """Token streams of one corpus for causal language models.

    The corpus is cut (by characters) into train, val and test parts in that order; the tokenizer is
    trained on the train part only. `ordering` decides the training batches: `random` draws
    `batches_per_epoch` batches of windows at random offsets; `contiguous` walks the stream in
    `batch_size` parallel rows (an epoch is one pass). Validation and test always walk their streams
    in `eval_batch_size` contiguous rows, which for a model without memory is the same as evaluating
    every non-overlapping window once. Both batch sizes are global: DDP processes share every batch's rows
    (`dlforge.data.sharding`).

    `vocab_size` caps the tokenizer's vocabulary (models are built with this many ids; a char corpus
    may use fewer). The tokenizer is this module's state: it is saved in every checkpoint and restored
    with it, and a fit writes it to `tokenizer.json` in the run dir.
    """

    def __init__(
        self,
        source: CorpusSource,
        root: str = "data",
        download: bool = False,
        tokenizer: TokenizerKind = "char",
        vocab_size: int = 128,
        block_size: Annotated[int, Positive] = 64,
        batch_size: Annotated[int, Positive] = 12,
        eval_batch_size: Annotated[int, Positive] = 16,
        ordering: Literal["random", "contiguous"] = "random",
        batches_per_epoch: Annotated[int, Positive] = 100,
        val_fraction: Annotated[float, Fraction] = DEFAULT_FRACTIONS["val"],
        test_fraction: Annotated[float, Fraction] = DEFAULT_FRACTIONS["test"],
        seed: int = 0,
    ):
        super().__init__()
        if not (val_fraction > 0 and test_fraction > 0 and val_fraction + test_fraction < 1):
            raise ConfigError(
                f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be > 0 and sum to < 1"
            )
        self.source = source
        self.root = Path(root)
        self.download = download
        self.tokenizer_kind = tokenizer
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.ordering = ordering
        self.batches_per_epoch = batches_per_epoch
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.tokenizer: Tokenizer | None = None
        self.streams: dict[str, np.memmap] = {}
        self.chars_per_token: dict[str, float] = {}  # per split; 1.0 for a char tokenizer
        # Our iterable datasets split the work between ranks themselves and run without worker processes,
        # so their lengths are exact; Lightning warns about `__len__` on any IterableDataset regardless.
        warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")

    @property
    def prepared_dir(self) -> Path:
        """`<tokenizer>-<vocab_size>`, plus the split unless it is the default: files cut another way are
        written beside the default ones (which data.dvc may record), never over them."""
        name = f"{self.tokenizer_kind}-{self.vocab_size}"
        fractions = {"val": self.val_fraction, "test": self.test_fraction}
        if fractions != DEFAULT_FRACTIONS:
            name += "".join(f"-{split}{fraction:g}" for split, fraction in fractions.items())
        return self.root / self.source.name / name

    def prepare_data(self) -> None:
        """Write the tokenizer and token streams, unless files made from the same text and settings exist.
        They are written into a temporary dir that replaces the prepared dir only once complete."""
        text = self.source.text(self.root, self.download)
        settings = {**self._settings(), "corpus_sha256": hashlib.sha256(text.encode()).hexdigest()}
        meta = self._read_meta()
        if meta is not None and meta["settings"] == settings:
            return  # without the lock: a read-only data dir prepared before must still train
        # Another process (a sweep job, a parallel run) may be making the same dir: wait, then look again.
        with preparing(self.prepared_dir):
            meta = self._read_meta()
            if meta is None or meta["settings"] != settings:
                self._prepare(text, settings)

    def _prepare(self, text: str, settings: dict) -> None:
        bounds = [
            0,
            int(len(text) * (1 - self.val_fraction - self.test_fraction)),
            int(len(text) * (1 - self.test_fraction)),
            len(text),
        ]
        parts = {split: text[start:end] for split, start, end in zip(SPLITS, bounds, bounds[1:])}
        for split, part in parts.items():
            if not part:
                raise DataError(
                    f"the {split} part of {self.source.name} has no text: {len(text)} characters are too few "
                    f"for data.val_fraction={self.val_fraction} and data.test_fraction={self.test_fraction}"
                )
        tokenizer = train_tokenizer(self.tokenizer_kind, _chunks(parts["train"]), self.vocab_size)
        dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
        with staged_dir(self.prepared_dir) as directory:
            counts = {
                split: {"chars": len(part), "tokens": _write_tokens(directory / f"{split}.bin", tokenizer, part, dtype)}
                for split, part in parts.items()
            }
            (directory / "tokenizer.json").write_bytes(tokenizer.to_json().encode())
            meta = {"settings": settings, "dtype": np.dtype(dtype).name, "splits": counts}
            (directory / "meta.json").write_bytes(json.dumps(meta, indent=2).encode())

    def setup(self, stage: str | None = None) -> None:
        if not self.streams:
            meta = self._read_meta()
            if meta is None or any(meta["settings"].get(key) != value for key, value in self._settings().items()):
                self.prepare_data()  # used without a Trainer, which would have called it first
                meta = self._read_meta()
            tokenizer_path = self.prepared_dir / "tokenizer.json"
            with reading(tokenizer_path):
                tokenizer = tokenizer_from_json(tokenizer_path.read_text())
            self._use_tokenizer(tokenizer)
            self.streams = {split: self._stream(split, meta) for split in SPLITS}
            self.chars_per_token = {
                split: counts["chars"] / counts["tokens"] for split, counts in meta["splits"].items()
            }
        if stage == "fit" and self.trainer is not None and self.trainer.is_global_zero:
            Path(self.trainer.default_root_dir).mkdir(parents=True, exist_ok=True)
            (Path(self.trainer.default_root_dir) / "tokenizer.json").write_text(self.tokenizer.to_json())

    def train_dataloader(self) -> DataLoader:
        if self.ordering == "contiguous":
            return StreamLoader(self._rows("train", self.batch_size, "data.batch_size", self._epoch))
        rank, world_size = rank_and_world_size(self.trainer)
        batch_size = per_process(self.batch_size, world_size, "data.batch_size")
        windows = RandomWindows(
            self.streams["train"],
            self.block_size,
            batch_size,
            self.batches_per_epoch,
            self.seed,
            self._epoch,
            rank,
            world_size,
        )
        return StreamLoader(windows)

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._rows("val", self.eval_batch_size, "data.eval_batch_size"), batch_size=None)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self._rows("test", self.eval_batch_size, "data.eval_batch_size"), batch_size=None)

    def state_dict(self) -> dict[str, str]:
        return {"tokenizer": self.tokenizer.to_json()} if self.tokenizer is not None else {}

    def load_state_dict(self, state_dict: dict[str, str]) -> None:
        self._use_tokenizer(tokenizer_from_json(state_dict["tokenizer"]))

    def _use_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Setup and checkpoint restore both bring a tokenizer; they must agree, whichever comes first."""
        if self.tokenizer is not None and tokenizer != self.tokenizer:
            raise DataError(
                f"the tokenizer in {self.prepared_dir} differs from the checkpoint's (the corpus text changed?); "
                "the token streams no longer fit the model: train from scratch, or restore the old prepared data"
            )
        self.tokenizer = tokenizer

    def _rows(self, split: str, batch_size: int, key: str, epoch: Callable[[], int] = lambda: 0) -> ContiguousRows:
        """`batch_size` rows over all processes, this process's share of them."""
        rank, world_size = rank_and_world_size(self.trainer)
        share = per_process(batch_size, world_size, key)
        rows = ContiguousRows(self.streams[split], self.block_size, share, rank, world_size, epoch)
        if len(rows) == 0:
            raise DataError(
                f"the {split} split has {len(self.streams[split])} tokens: too few for {key}={batch_size} rows "
                f"of data.block_size + 1 = {self.block_size + 1} tokens"
            )
        return rows

    def _settings(self) -> dict:
        """Everything the prepared files depend on, apart from the corpus text."""
        return {
            "corpus": self.source.name,
            "tokenizer": self.tokenizer_kind,
            "vocab_size": self.vocab_size,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
        }

    def _read_meta(self) -> dict | None:
        path = self.prepared_dir / "meta.json"
        if not path.is_file():
            return None
        with reading(path):
            meta = json.loads(path.read_text())
            _ = dict(meta["settings"]), np.dtype(meta["dtype"]), [meta["splits"][split]["tokens"] for split in SPLITS]
        return meta

    def _stream(self, split: str, meta: dict) -> np.memmap:
        path = self.prepared_dir / f"{split}.bin"
        with reading(path):
            stream = np.memmap(path, dtype=meta["dtype"], mode="r")
        if len(stream) != meta["splits"][split]["tokens"]:
            raise DataError(
                f"{path} holds {len(stream)} tokens but its meta.json says {meta['splits'][split]['tokens']}: "
                "`dvc checkout data` restores the version data.dvc records, or delete the dir to have it made anew"
            )
        return stream


def _chunks(text: str, size: int = 1 << 16) -> Iterator[str]:
    """Pieces of about `size` characters, cut after a newline (so no word is cut) and encoded in parallel."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + size) + 1 or len(text)
        yield text[start:end]
        start = end


def _write_tokens(path: Path, tokenizer: Tokenizer, text: str, dtype: type) -> int:
    """Encode `text` piece by piece straight into the flat array file at `path`; returns the token count."""
    pieces, count = list(_chunks(text)), 0
    with open(path, "wb") as file:
        for first in range(0, len(pieces), 64):
            for ids in tokenizer.encode_batch(pieces[first : first + 64]):
                np.asarray(ids, dtype=dtype).tofile(file)
                count += len(ids)
    return count
