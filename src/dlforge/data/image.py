"""Image classification data: an `ImageSource` (`dlforge.data.sources.images`) read from files under
`root` (the data dir DVC versions), split, and normalised per channel with train statistics; served as
whole batches from memory or read per sample by loader workers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dlforge.constraints import Fraction, NonNegative, Positive
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


class ImageClassificationData(SplitsData):
    """Train/val/test splits of one image source, normalised per channel with train statistics.

    A source without an official test split has `test_fraction` of it held out, stratified by class.
    `val_fraction` of the (remaining) training data is held out for validation, stratified as well.
    `loading`: `memory` holds each split as normalised float tensors and slices whole batches from them;
    `samples` reads each image from the source's array when it is drawn, in `num_workers` loader
    processes, and collates them: the same batches, for data too large to hold. `augment` shifts
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
        loading: Literal["memory", "samples"] = "memory",
        num_workers: Annotated[int, NonNegative] = 0,
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
        self.expected = {"num_classes": num_classes, "channels": channels, "image_size": image_size}
        self.splits: dict[str, Dataset] = {}

    def prepare_data(self) -> None:
        self.source.prepare(self.root, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        train_part, test_part = self.source.load(self.root, self.download)
        self._check(train_part)
        if test_part is None:
            rest, test = stratified_split(train_part.labels, self.test_fraction, self.split_seed)
            test_part = train_part
        else:
            rest, test = torch.arange(len(train_part.labels)), torch.arange(len(test_part.labels))
        train, val = (
            rest[rows] for rows in stratified_split(train_part.labels[rest], self.val_fraction, self.split_seed)
        )
        parts = {"train": (train_part, train), "val": (train_part, val), "test": (test_part, test)}  # split: its rows
        train_images = self._scaled(train_part, train)
        mean = train_images.mean(dim=(0, 2, 3), keepdim=True)
        std = train_images.std(dim=(0, 2, 3), keepdim=True)
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

    def _scaled(self, part: LabelledImages, rows: torch.Tensor) -> torch.Tensor:
        images = torch.from_numpy(np.asarray(part.images[rows.numpy()]))
        # NumPy may give a size-1 channel dim a stride of 1, which PyTorch's kernels read as channels-last
        # and then convolve in another order: plain strides keep the numbers of in-memory runs as they were.
        return images.to(torch.float32, memory_format=torch.contiguous_format) / self.source.white

    def _check(self, part: LabelledImages) -> None:
        found = {
            "num_classes": int(part.labels.max()) + 1,
            "channels": part.images.shape[1],
            "image_size": part.images.shape[-1],
        }
        for key, value in found.items():
            if value != self.expected[key]:
                raise DataError(f"data.{key} is {self.expected[key]} but {self.source.name} has {value}")

    def loader(self, dataset: Dataset, batch_size: int, shuffle: bool, rank: int, world_size: int) -> DataLoader:
        if self.loading == "memory":
            return super().loader(dataset, batch_size, shuffle, rank, world_size)
        on_gpu = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return sample_loader(
            dataset, batch_size, shuffle, self.num_workers, pin_memory=on_gpu, rank=rank, world_size=world_size
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.augment and self.trainer is not None and self.trainer.training:
            images, labels = batch
            images = random_shift(images, self.shift_pixels) if self.shift_pixels else images
            return (random_hflip(images) if self.hflip else images), labels
        return batch
