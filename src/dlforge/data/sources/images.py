"""Image classification datasets, read from files under `root` (the data dir DVC versions).

Digits: scikit-learn's 1797 8x8 digits (offline: written into `root/digits/` from the installed package).
TorchvisionImages: torchvision's MNIST, FashionMNIST and CIFAR-10 in their published formats, downloaded
  on request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, NamedTuple, Protocol

import numpy as np
import torch

from dlforge.data.files import reading
from dlforge.data.sources import Source
from dlforge.errors import DataError
from dlforge.files import replacing


class LabelledImages(NamedTuple):
    images: np.ndarray  # stored pixel values (N, C, H, W), possibly memory-mapped: read rows as needed
    labels: torch.Tensor  # int64 (N,)


class ImageSource(Source, Protocol):
    """What ImageClassificationData asks of an image dataset."""

    white: float  # the stored value of a full-intensity pixel: images are scaled by it into [0, 1]

    def prepare(self, root: Path, download: bool) -> None:
        """Write or fetch the dataset's files under `root`, unless they are there."""
        ...

    def load(self, root: Path, download: bool) -> tuple[LabelledImages, LabelledImages | None]:
        """The training split (validation is held out of it) and the official test split, None if there is none."""
        ...


DIGITS_FILES = ("images.npy", "labels.npy")


class Digits:
    """Runs read the files in `root/digits/`, so DVC versions what they train on; no official test split."""

    name = "digits"
    needs_download = False
    white = 16.0

    def prepare(self, root: Path, download: bool) -> None:
        """Write the digits (pixel values 0-16) as uint8 arrays, unless they are there."""
        directory = Path(root) / "digits"
        if all((directory / name).is_file() for name in DIGITS_FILES):
            return
        from sklearn.datasets import load_digits

        digits = load_digits()
        directory.mkdir(parents=True, exist_ok=True)
        for name, array in zip(DIGITS_FILES, (digits.images, digits.target)):
            with replacing(directory / name) as file:  # whole files only, also with runs preparing at once
                np.save(file, array.astype(np.uint8))

    def load(self, root: Path, download: bool) -> tuple[LabelledImages, None]:
        self.prepare(root, download)
        images_path, labels_path = (Path(root) / "digits" / name for name in DIGITS_FILES)
        with reading(images_path):
            images = np.load(images_path, mmap_mode="r")[:, None]  # (N, 1, 8, 8)
        with reading(labels_path):
            labels = torch.from_numpy(np.load(labels_path)).long()
        return LabelledImages(images, labels), None


class TorchvisionImages:
    """A torchvision dataset's official train and test splits, read from its files under `root`."""

    needs_download = True
    white = 255.0

    def __init__(self, name: Literal["mnist", "fashion_mnist", "cifar10"]):
        self.name = name

    def prepare(self, root: Path, download: bool) -> None:
        if download:
            self.load(root, download)

    def load(self, root: Path, download: bool) -> tuple[LabelledImages, LabelledImages]:
        from torchvision import datasets

        dataset_class = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}
        try:
            splits = [dataset_class[self.name](str(root), train=train, download=download) for train in (True, False)]
        except RuntimeError as error:
            fetch = f"`python src/prepare.py data={self.name} data.download=true`"
            hint = "" if download else f"; set data.download=true to fetch it (needs internet): {fetch}"
            raise DataError(f"{self.name} not found or corrupted under {root}: {error}{hint}") from error
        return _labelled(splits[0]), _labelled(splits[1])


def _labelled(dataset) -> LabelledImages:
    images = np.asarray(dataset.data)
    images = images[:, None] if images.ndim == 3 else np.ascontiguousarray(images.transpose(0, 3, 1, 2))  # HWC -> CHW
    return LabelledImages(images, torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64))
