"""Image classification datasets, read from files under `root` (the data dir DVC versions).

Digits: scikit-learn's 1797 8x8 digits (offline: written into `root/digits/` from the installed package).
TorchvisionImages: torchvision's MNIST, FashionMNIST and CIFAR-10 in their published formats, downloaded
  on request, or taken from a system package's files where one ships them (Debian's dataset-fashion-mnist).
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

import numpy as np
import torch

from dlforge.data.download import DEFAULT_TIMEOUT, DownloadTimeout, fetch
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
DEBIAN_PACKAGES = {"fashion_mnist": "dataset-fashion-mnist"}  # IDX archives in /usr/share/datasets/


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
    """A torchvision dataset's official train and test splits, read from its files under `root`. Its
    archives are downloaded here (timeout, progress, no partial files: `dlforge.data.download`) to where
    torchvision looks for them; torchvision then only checks and extracts them. `package_dir` is where a
    system package installs the (M)NIST-format archives (Debian's dataset-fashion-mnist:
    /usr/share/datasets/fashion-mnist): when the data dir lacks the files, they are extracted from there
    into it, offline, so that DVC versions what runs read."""

    needs_download = True  # not made from Python packages: `all=true` leaves it out
    white = 255.0

    def __init__(
        self,
        name: Literal["mnist", "fashion_mnist", "cifar10"],
        download_timeout: DownloadTimeout = DEFAULT_TIMEOUT,
        package_dir: str | None = None,
    ):
        self.name = name
        self.download_timeout = download_timeout
        self.package_dir = Path(package_dir) if package_dir else None

    def prepare(self, root: Path, download: bool) -> None:
        if download:
            self.load(root, download)

    def load(self, root: Path, download: bool) -> tuple[LabelledImages, LabelledImages]:
        try:
            return self._splits(root, extract=False)
        except RuntimeError as error:  # torchvision's "not found" or "corrupted"
            if self._from_package(Path(root)):
                return self._splits(root, extract=False)
            if not download:
                command = f"`python src/prepare.py data={self.name} data.download=true`"
                package = f" nor in {self.package_dir}" if self.package_dir else ""
                debian = DEBIAN_PACKAGES.get(self.name)
                install = f"`apt-get install {debian}` installs it (Debian), or " if package and debian else ""
                raise DataError(
                    f"{self.name} not found or corrupted under {root}{package}: {error}; "
                    f"{install}set data.download=true to fetch it (needs internet): {command}"
                ) from error
        from torchvision.datasets.utils import check_integrity

        for urls, path, md5 in self._archives(Path(root)):
            if not check_integrity(str(path), md5):
                fetch(urls, path, self.download_timeout, md5)
        try:
            return self._splits(root, extract=True)
        except RuntimeError as error:
            raise DataError(f"{self.name} not found or corrupted under {root}: {error}") from error

    def _from_package(self, root: Path) -> bool:
        """Extract the package's archives to where torchvision reads them (replacing partial files), if it
        has them all. Their gzip differs from the published archives' (other MD5s): their contents do not."""
        if self.package_dir is None or self.name == "cifar10":
            return False
        packaged = [(self.package_dir / path.name, path) for _, path, _ in self._archives(root)]
        if not all(archive.is_file() for archive, _ in packaged):
            return False
        for archive, path in packaged:
            path.parent.mkdir(parents=True, exist_ok=True)
            with gzip.open(archive, "rb") as source, replacing(path.with_suffix("")) as file:
                shutil.copyfileobj(source, file)
        return True

    def _dataset_class(self):
        from torchvision import datasets

        return {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}[self.name]

    def _splits(self, root: Path, extract: bool) -> tuple[LabelledImages, LabelledImages]:
        """With `extract`, torchvision's download step runs: it finds the archives in place and extracts them."""
        dataset_class = self._dataset_class()
        train, test = (dataset_class(str(root), train=train, download=extract) for train in (True, False))
        return _labelled(train), _labelled(test)

    def _archives(self, root: Path) -> list[tuple[list[str], Path, str]]:
        """The URLs (mirrors), path and MD5 of each file torchvision's download step would fetch (its
        public class attributes), at the path where it looks for it."""
        dataset_class = self._dataset_class()
        if self.name == "cifar10":
            return [([dataset_class.url], root / dataset_class.filename, dataset_class.tgz_md5)]
        raw = root / dataset_class.__name__ / "raw"  # MNIST.raw_folder
        return [
            ([mirror + name for mirror in dataset_class.mirrors], raw / name, md5)
            for name, md5 in dataset_class.resources
        ]


def _labelled(dataset) -> LabelledImages:
    images = np.asarray(dataset.data)
    images = images[:, None] if images.ndim == 3 else np.ascontiguousarray(images.transpose(0, 3, 1, 2))  # HWC -> CHW
    return LabelledImages(images, torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64))
