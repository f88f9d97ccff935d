"""Speech data: clips of a `KeywordSource` or transcribed utterances of a `TranscriptSource`
(`dlforge.data.sources.speech`), read one at a time with soundfile by loader workers and collated into
batches of raw 16 kHz waveforms. Features (log-mel, SpecAugment) are the nets' (`dlforge.nets.audio`): a
checkpoint then takes audio files as they are.

Batches:
  KeywordData:    (waves, labels): waves float32 (B, clip_samples), each clip cut or zero-padded at its end to
                  `clip_seconds`; labels int64 (B,) indexing `categories`.
  TranscriptData: (waves, lengths, targets, target_lengths): waves float32 (B, S) right-padded with zeros,
                  lengths int64 (B,) of real samples; targets int64 (B, L) of character ids (1..len(ALPHABET),
                  0 the CTC blank, which also pads), target_lengths int64 (B,).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Protocol

import torch
from torch.utils.data import DataLoader, Dataset

from dlforge.constraints import NonNegative, Positive
from dlforge.data.sources.speech import SAMPLE_RATE, read_audio
from dlforge.data.tensors import SplitsData, sample_loader
from dlforge.errors import DataError

SPLITS = ("train", "val", "test")
ALPHABET = " 'abcdefghijklmnopqrstuvwxyz"  # LibriSpeech's characters, lower-cased; id = position + 1


def encode(text: str) -> list[int]:
    return [ALPHABET.index(char) + 1 for char in text]


def decode(ids: list[int]) -> str:
    return "".join(ALPHABET[i - 1] for i in ids if 0 < i <= len(ALPHABET))


class KeywordSource(Protocol):
    name: str
    needs_download: bool
    classes: list[str]

    def prepare(self, root: Path, download: bool) -> None: ...

    def keyword_split(self, root: Path, split: str) -> list[tuple[Path, int]]: ...


class TranscriptSource(Protocol):
    name: str
    needs_download: bool

    def prepare(self, root: Path, download: bool) -> None: ...

    def transcribed_split(self, root: Path, split: str) -> list[tuple[Path, str]]: ...


class Clips(Dataset):
    def __init__(self, items: list[tuple[Path, int]], samples: int):
        self.items, self.samples = items, samples

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        wave = torch.from_numpy(read_audio(path))[: self.samples]
        return torch.nn.functional.pad(wave, (0, self.samples - len(wave))), label


class Utterances(Dataset):
    def __init__(self, items: list[tuple[Path, str]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path, text = self.items[index]
        return torch.from_numpy(read_audio(path)), torch.tensor(encode(text))


def collate_utterances(items: list) -> tuple[torch.Tensor, ...]:
    waves, targets = zip(*items)
    pad = torch.nn.utils.rnn.pad_sequence
    return (
        pad(list(waves), batch_first=True),
        torch.tensor([len(wave) for wave in waves]),
        pad(list(targets), batch_first=True),
        torch.tensor([len(target) for target in targets]),
    )


class AudioData(SplitsData):
    """What keyword and transcript data share: splits read per sample in `num_workers` loader processes."""

    def __init__(self, source, root: str, batch_size: int, eval_batch_size: int, num_workers: int, download: bool):
        super().__init__()
        self.source = source
        self.root = Path(root)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.download = download
        self.splits: dict[str, Dataset] = {}

    def prepare_data(self) -> None:
        self.source.prepare(self.root, self.download)

    def loader(self, dataset: Dataset, batch_size: int, shuffle: bool, rank: int, world_size: int) -> DataLoader:
        on_gpu = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return sample_loader(
            dataset, batch_size, shuffle, self.num_workers, on_gpu, self.collate, rank=rank, world_size=world_size
        )


class KeywordData(AudioData):
    """Train/val/test clips of a keyword source as `(waves, labels)` batches (module docstring),
    `categories[k]` naming class k; `num_classes` states what the models are built for, checked against
    the data."""

    collate = staticmethod(torch.utils.data.default_collate)

    def __init__(
        self,
        source: KeywordSource,
        root: str = "data",
        batch_size: Annotated[int, Positive] = 64,
        eval_batch_size: Annotated[int, Positive] = 256,
        num_workers: Annotated[int, NonNegative] = 1,
        clip_seconds: Annotated[float, Positive] = 1.0,
        download: bool = False,
        num_classes: Annotated[int, Positive] = 12,
    ):
        super().__init__(source, root, batch_size, eval_batch_size, num_workers, download)
        self.clip_samples = round(clip_seconds * SAMPLE_RATE)
        self.num_classes = num_classes
        self.categories: list[str] = []

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if len(self.source.classes) != self.num_classes:
            raise DataError(
                f"data.num_classes is {self.num_classes} but {self.source.name} has {len(self.source.classes)}"
            )
        self.categories = list(self.source.classes)
        self.splits = {name: Clips(self.source.keyword_split(self.root, name), self.clip_samples) for name in SPLITS}
        for name, split in self.splits.items():
            if not len(split):
                raise DataError(f"{self.source.name}: no clips in its {name} split")


class TranscriptData(AudioData):
    """Train/val/test utterances of a transcript source as `(waves, lengths, targets, target_lengths)`
    batches (module docstring). `vocab_size` (the blank and `ALPHABET`) is what the models are built for; a
    transcript with a character outside `ALPHABET` is a DataError naming the audio file."""

    collate = staticmethod(collate_utterances)

    def __init__(
        self,
        source: TranscriptSource,
        root: str = "data",
        batch_size: Annotated[int, Positive] = 32,
        eval_batch_size: Annotated[int, Positive] = 64,
        num_workers: Annotated[int, NonNegative] = 1,
        download: bool = False,
        vocab_size: Annotated[int, Positive] = len(ALPHABET) + 1,
    ):
        super().__init__(source, root, batch_size, eval_batch_size, num_workers, download)
        self.vocab_size = vocab_size

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.vocab_size != len(ALPHABET) + 1:
            raise DataError(
                f"data.vocab_size is {self.vocab_size}, but the CTC blank and {ALPHABET!r} make {len(ALPHABET) + 1}"
            )
        splits = {name: self.source.transcribed_split(self.root, name) for name in SPLITS}
        for path, text in (item for items in splits.values() for item in items):
            if unknown := set(text) - set(ALPHABET):
                raise DataError(f"{path}: its transcript has {''.join(sorted(unknown))!r}, outside {ALPHABET!r}")
        self.splits = {name: Utterances(items) for name, items in splits.items()}
