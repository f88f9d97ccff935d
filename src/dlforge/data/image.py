"""Image classification data: digits (offline, ships with scikit-learn) and torchvision's MNIST,
FashionMNIST and CIFAR-10, all read from files under `root` (the data dir DVC versions) and held in
memory as normalised float tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch

from dlforge.data.tensors import InMemorySplits, TensorBatches, random_hflip, random_shift, stratified_split
from dlforge.errors import DataError
from dlforge.files import replacing

Source = Literal["digits", "mnist", "fashion_mnist", "cifar10"]
Arrays = tuple[torch.Tensor, torch.Tensor]  # uint8/float images (N, C, H, W), int64 labels (N,)


DIGITS_FILES = ("images.npy", "labels.npy")


def prepare_digits(root: str | Path) -> None:
    """Write scikit-learn's 1797 8x8 digits (pixel values 0-16) as uint8 arrays in `root/digits/`,
    unless they are there: runs read these files, so DVC versions what they train on."""
    directory = Path(root) / "digits"
    if all((directory / name).is_file() for name in DIGITS_FILES):
        return
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in zip(DIGITS_FILES, (digits.images, digits.target)):
        with replacing(directory / name) as file:  # whole files only, also with runs preparing at once
            np.save(file, array.astype(np.uint8))


def load_digits(root: str | Path) -> tuple[Arrays, None]:
    """The digits from `root/digits/` (written there first if missing); no official test split."""
    prepare_digits(root)
    directory = Path(root) / "digits"
    images = torch.from_numpy(np.load(directory / "images.npy")).float().unsqueeze(1) / 16.0
    return (images, torch.from_numpy(np.load(directory / "labels.npy")).long()), None


def load_torchvision(name: str, root: str | Path, download: bool) -> tuple[Arrays, Arrays]:
    """The official train and test splits of a torchvision dataset, read from its files under `root`."""
    from torchvision import datasets

    dataset_class = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}[name]
    try:
        splits = [dataset_class(str(root), train=train, download=download) for train in (True, False)]
    except RuntimeError as error:
        fetch = f"`python src/prepare.py data={name} data.download=true`"
        hint = "" if download else f"; set data.download=true to fetch it (needs internet): {fetch}"
        raise DataError(f"{name} not found or corrupted under {root}: {error}{hint}") from error
    return tuple(_torchvision_arrays(split) for split in splits)


def _torchvision_arrays(dataset) -> Arrays:
    images = torch.as_tensor(np.asarray(dataset.data))
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)  # HWC -> CHW
    return images.contiguous(), torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)


class ImageClassificationData(InMemorySplits):
    """Train/val/test splits of one image source, normalised per channel with train statistics.

    digits has no official test split: `test_fraction` of it is held out, stratified by class.
    `val_fraction` of the (remaining) training data is held out for validation, stratified as well.
    `augment` shifts training images by up to `shift_pixels` (and flips them if `hflip`), per batch.
    `num_classes`, `channels` and `image_size` state what the models are built for; they are checked
    against the data once it is loaded.
    """

    def __init__(
        self,
        source: Source = "digits",
        root: str = "data",
        batch_size: int = 64,
        eval_batch_size: int = 512,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        augment: bool = False,
        shift_pixels: int = 1,
        hflip: bool = False,
        download: bool = False,
        num_classes: int = 10,
        channels: int = 1,
        image_size: int = 8,
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
        self.expected = {"num_classes": num_classes, "channels": channels, "image_size": image_size}
        self.splits: dict[str, TensorBatches] = {}

    def prepare_data(self) -> None:
        if self.source == "digits":
            prepare_digits(self.root)
        elif self.download:
            load_torchvision(self.source, self.root, download=True)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.source == "digits":
            (images, labels), _ = load_digits(self.root)
            rest, test = stratified_split(labels, self.test_fraction, self.split_seed)
            test_images, test_labels = images[test], labels[test]
            images, labels = images[rest], labels[rest]
        else:
            (images, labels), (test_images, test_labels) = load_torchvision(self.source, self.root, self.download)
        train, val = stratified_split(labels, self.val_fraction, self.split_seed)
        self._check(images, labels)
        images, test_images = images.float(), test_images.float()
        if self.source != "digits":
            images, test_images = images / 255.0, test_images / 255.0
        mean = images[train].mean(dim=(0, 2, 3), keepdim=True)
        std = images[train].std(dim=(0, 2, 3), keepdim=True)
        normalise = lambda x: ((x - mean) / std).contiguous()  # noqa: E731
        self.splits = {
            "train": TensorBatches(normalise(images[train]), labels[train]),
            "val": TensorBatches(normalise(images[val]), labels[val]),
            "test": TensorBatches(normalise(test_images), test_labels),
        }

    def _check(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        found = {"num_classes": int(labels.max()) + 1, "channels": images.shape[1], "image_size": images.shape[-1]}
        for key, value in found.items():
            if value != self.expected[key]:
                raise DataError(f"data.{key} is {self.expected[key]} but {self.source} has {value}")

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.augment and self.trainer is not None and self.trainer.training:
            images, labels = batch
            images = random_shift(images, self.shift_pixels) if self.shift_pixels else images
            return (random_hflip(images) if self.hflip else images), labels
        return batch
