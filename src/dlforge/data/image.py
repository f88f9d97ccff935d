"""Image classification data: an `ImageSource` (`dlforge.data.sources.images`) read from files under
`root` (the data dir DVC versions), split, and normalised per channel with train statistics; served as
whole batches from memory, read per sample by loader workers, or streamed from shards (LitData)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from dlforge.constraints import Fraction, NonNegative, Positive
from dlforge.data.files import preparing, reading, staged_dir
from dlforge.data.shards import NormalisedBatch, check_shards, shard_loader, write_shards
from dlforge.data.sources.images import ImageSource, LabelledImages
from dlforge.data.tensors import SplitsData, TensorBatches, random_hflip, random_shift, sample_loader, stratified_split
from dlforge.errors import DataError


class ImageSamples(Dataset):
    """One split's images read one at a time from the source's (possibly memory-mapped) array, scaled
    and normalised exactly as the in-memory splits are."""

    def __init__(self, part: LabelledImages, rows: torch.Tensor, white: float, mean: torch.Tensor, std: torch.Tensor):
        self.part, self.rows, self.white = part, rows, white
        self.mean, self.std = mean[0], std[0]  # (C, 1, 1): one image's channels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = int(self.rows[index])
        image = torch.from_numpy(np.array(self.part.images[row])).float() / self.white
        return (image - self.mean) / self.std, self.part.labels[row]


STATS = "stats.json"  # beside a source's shard splits: the training statistics and what the images are


def channel_stats(read: Callable[[int, int], torch.Tensor], count: int, chunk: int = 4096):
    """Per-channel mean and standard deviation (unbiased, as `Tensor.std`) of `count` images, as float32
    (1, C, 1, 1) tensors. `read(start, stop)` gives images start..stop-1 as floats: they are combined a
    chunk at a time in float64 (Chan et al.'s pairwise update), so the images need not fit in memory."""
    seen, mean, squares = 0, torch.zeros(()), torch.zeros(())
    for start in range(0, count, chunk):
        images = read(start, min(start + chunk, count)).double()
        n = images.numel() // images.shape[1]
        chunk_mean = images.mean(dim=(0, 2, 3))
        chunk_squares = ((images - chunk_mean[:, None, None]) ** 2).sum(dim=(0, 2, 3))
        delta, total = chunk_mean - mean, seen + n
        mean = mean + delta * n / total
        squares = squares + chunk_squares + delta**2 * seen * n / total
        seen = total
    shape = (1, -1, 1, 1)
    return mean.float().view(shape), (squares / (seen - 1)).sqrt().float().view(shape)


def _described(part: LabelledImages) -> dict[str, int]:
    """What the models are built for, as `part` has it (data.num_classes, channels, image_size)."""
    return {
        "num_classes": int(part.labels.max()) + 1,
        "channels": part.images.shape[1],
        "image_size": part.images.shape[-1],
    }


class ShardSplit(Dataset):
    """A split written as shards: its LitData dir (checked whole when made). Training streams it
    (`shard_loader`); evaluation reads its samples in order by index, as the per-sample path does, so that
    every process gets its share of every split however few chunks it has."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.size = check_shards(directory)
        self.reader = None  # opened in the process that reads (a loader worker)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        if self.reader is None:
            from litdata import StreamingDataset

            self.reader = StreamingDataset(str(self.directory))
        return self.reader[index]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "reader": None}


class ImageClassificationData(SplitsData):
    """Train/val/test splits of one image source, normalised per channel with train statistics.

    A source without an official test split has `test_fraction` of it held out, stratified by class.
    `val_fraction` of the (remaining) training data is held out for validation, stratified as well.
    `loading`: `memory` holds each split as normalised float tensors and slices whole batches from them;
    `samples` reads each image from the source's array when it is drawn, in `num_workers` loader
    processes, and collates them: the same batches, for data too large to hold; `shards` streams each split
    from shards that `prepare_data` writes under `root/<source name>/shards-<split>/` (`dlforge.data.shards`:
    LitData chunks of `shard_bytes`, read in a shuffled order of their own, resumable mid-epoch). `augment` shifts
    training images by up to `shift_pixels` (and flips them if `hflip`), per batch, on either path.
    `num_classes`, `channels` and `image_size` state what the models are built for; they are checked
    against the data once it is loaded.
    """

    def __init__(
        self,
        source: ImageSource,
        root: str = "data",
        batch_size: Annotated[int, Positive] = 64,
        eval_batch_size: Annotated[int, Positive] = 512,
        val_fraction: Annotated[float, Fraction] = 0.1,
        test_fraction: Annotated[float, Fraction] = 0.2,
        split_seed: int = 0,
        augment: bool = False,
        shift_pixels: Annotated[int, NonNegative] = 1,
        hflip: bool = False,
        download: bool = False,
        loading: Literal["memory", "samples", "shards"] = "memory",
        num_workers: Annotated[int, NonNegative] = 0,
        shard_bytes: Annotated[int, Positive] = 64 * 2**20,
        num_classes: Annotated[int, Positive] = 10,
        channels: Annotated[int, Positive] = 1,
        image_size: Annotated[int, Positive] = 8,
    ):
        super().__init__()
        self.source = source
        self.root = Path(root)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.augment = augment
        self.shift_pixels = shift_pixels
        self.hflip = hflip
        self.download = download
        self.loading = loading
        self.num_workers = num_workers
        self.shard_bytes = shard_bytes
        self.expected = {"num_classes": num_classes, "channels": channels, "image_size": image_size}
        self.splits: dict[str, Dataset] = {}

    def prepare_data(self) -> None:
        self.source.prepare(self.root, self.download)
        if self.loading == "shards":
            self._write_shards()

    @property
    def shards_dir(self) -> Path:
        """Where `loading=shards` reads (and `prepare_data` writes) this source's splits: one per split setting."""
        split = f"seed{self.split_seed}-val{self.val_fraction:g}-test{self.test_fraction:g}"
        return self.root / self.source.name / f"shards-{split}"

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.loading == "shards":
            self._setup_shards()
            return
        parts = self._parts()
        train_part, train = parts["train"]
        train_images = self._scaled(train_part, train) if self.loading == "memory" else None
        mean, std = self._train_stats(train_part, train, train_images)
        if self.loading == "samples":
            white = self.source.white
            self.splits = {name: ImageSamples(part, rows, white, mean, std) for name, (part, rows) in parts.items()}
            return
        normalise = lambda x: ((x - mean) / std).contiguous()  # noqa: E731
        self.splits = {
            name: TensorBatches(
                normalise(train_images if name == "train" else self._scaled(part, rows)), part.labels[rows]
            )
            for name, (part, rows) in parts.items()
        }

    def _parts(self) -> dict[str, tuple[LabelledImages, torch.Tensor]]:
        """Each split's images and its rows of them."""
        train_part, test_part = self.source.load(self.root, self.download)
        self._check(_described(train_part))
        if test_part is None:
            rest, test = stratified_split(train_part.labels, self.test_fraction, self.split_seed)
            test_part = train_part
        else:
            rest, test = torch.arange(len(train_part.labels)), torch.arange(len(test_part.labels))
        train, val = (
            rest[rows] for rows in stratified_split(train_part.labels[rest], self.val_fraction, self.split_seed)
        )
        return {"train": (train_part, train), "val": (train_part, val), "test": (test_part, test)}

    def _train_stats(self, part: LabelledImages, rows: torch.Tensor, images: torch.Tensor | None = None):
        """`channel_stats` of the training images: from `images` where they are held, else read a chunk at a
        time (they need not fit in memory)."""
        if images is not None:
            return channel_stats(lambda start, stop: images[start:stop], len(rows))
        return channel_stats(lambda start, stop: self._scaled(part, rows[start:stop]), len(rows))

    def _write_shards(self) -> None:
        """Write every split as shards (`dlforge.data.shards`), each in its own shuffled order, with the
        training statistics, unless they are there; staged and swapped in whole, one process at a time."""
        target = self.shards_dir
        if (target / STATS).is_file():
            return
        with preparing(target):
            if (target / STATS).is_file():
                return
            parts = self._parts()
            train_part, train = parts["train"]
            mean, std = self._train_stats(train_part, train)
            with staged_dir(target) as staged:
                counts = {}
                for name, (part, rows) in parts.items():
                    order = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(self.split_seed))]
                    samples = ((part.images[row], part.labels[row]) for row in order.tolist())
                    counts[name] = write_shards(staged / name, samples, self.shard_bytes)
                stats = {"mean": mean.flatten().tolist(), "std": std.flatten().tolist(), "white": self.source.white}
                meta = {"source": self.source.name, "samples": counts, **_described(train_part), **stats}
                (staged / STATS).write_text(json.dumps(meta))

    def _setup_shards(self) -> None:
        path = self.shards_dir / STATS
        if not path.is_file():
            raise DataError(
                f"{path} not found: write the shards first, `python src/prepare.py data=... data.loading=shards`"
            )
        with reading(path):
            stats = json.loads(path.read_text())
            mean, std = (torch.tensor(stats[key])[:, None, None] for key in ("mean", "std"))  # (C, 1, 1)
            self._check({key: stats[key] for key in self.expected})
        self.normalise = NormalisedBatch(stats["white"], mean, std)
        self.splits = {name: ShardSplit(self.shards_dir / name) for name in ("train", "val", "test")}

    def _scaled(self, part: LabelledImages, rows: torch.Tensor) -> torch.Tensor:
        images = torch.from_numpy(np.asarray(part.images[rows.numpy()]))
        # NumPy may give a size-1 channel dim a stride of 1, which PyTorch's kernels read as channels-last
        # and then convolve in another order: plain strides keep the numbers of in-memory runs as they were.
        return images.to(torch.float32, memory_format=torch.contiguous_format) / self.source.white

    def _check(self, found: dict[str, int]) -> None:
        for key, value in found.items():
            if value != self.expected[key]:
                raise DataError(f"data.{key} is {self.expected[key]} but {self.source.name} has {value}")

    def loader(self, dataset: Dataset, batch_size: int, shuffle: bool, rank: int, world_size: int) -> DataLoader:
        if self.loading == "memory":
            return super().loader(dataset, batch_size, shuffle, rank, world_size)
        on_gpu = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        if isinstance(dataset, ShardSplit) and shuffle:
            seed = torch.initial_seed() % 2**31  # the run's seed (LitData seeds NumPy with it: < 2**32)
            return shard_loader(
                dataset.directory, batch_size, seed, self.num_workers, on_gpu, self.normalise, rank, world_size
            )
        collate = self.normalise if isinstance(dataset, ShardSplit) else default_collate
        return sample_loader(
            dataset, batch_size, shuffle, self.num_workers, on_gpu, collate, rank=rank, world_size=world_size
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.augment and self.trainer is not None and self.trainer.training:
            images, labels = batch
            images = random_shift(images, self.shift_pixels) if self.shift_pixels else images
            return (random_hflip(images) if self.hflip else images), labels
        return batch
