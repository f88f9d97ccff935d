"""Image classification datasets, read from files under `root` (the data dir DVC versions).

Digits: scikit-learn's 1797 8x8 digits (offline: written into `root/digits/` from the installed package).
TorchvisionImages: torchvision's MNIST, FashionMNIST and CIFAR-10 in their published formats, downloaded
  on request, or taken from a system package's files where one ships them (Debian's dataset-fashion-mnist).
ImageFolder: image files of your own in torchvision's ImageFolder layout (a dir per class), read one by one.
Synthetic: random images made on the fly from (seed, row), of any size: for measuring the data paths at scale.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Annotated, Literal, NamedTuple, Protocol

import numpy as np
import torch

from dlforge.constraints import Positive
from dlforge.data.download import DEFAULT_TIMEOUT, DownloadTimeout, fetch
from dlforge.data.files import reading
from dlforge.data.sources import Source
from dlforge.errors import DataError
from dlforge.files import replacing


class LabelledImages(NamedTuple):
    images: (
        np.ndarray | RowImages
    )  # stored pixel values (N, C, H, W), memory-mapped or made per row: read rows as needed
    labels: torch.Tensor  # int64 (N,)


class RowImages:
    """An array of images (N, C, H, W) of stored pixel values that makes each row only when it is indexed: a
    dataset larger than memory is read one image at a time. Indexing with an int gives one image, with an
    array of rows those images stacked, as a NumPy array would."""

    dtype = np.dtype(np.uint8)

    def __init__(self, shape: tuple[int, int, int, int]):
        self.shape = shape

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        if np.ndim(index) == 0:
            return self.row(int(index))
        return np.stack([self.row(int(row)) for row in np.asarray(index)]).reshape(-1, *self.shape[1:])

    def row(self, index: int) -> np.ndarray:
        """Image `index` as a (C, H, W) uint8 array."""
        raise NotImplementedError


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


class FolderImages(RowImages):
    """The images of a torchvision ImageFolder, decoded (by PIL) when indexed; all must have the first's size
    and channels (greyscale or RGB)."""

    def __init__(self, files: list[str]):
        self.files = files
        first = self._read(0)
        self.mode = "L" if first.ndim == 2 else "RGB"
        super().__init__((len(files), *self._chw(first).shape))

    def row(self, index: int) -> np.ndarray:
        image = self._chw(self._read(index, self.mode))
        if image.shape != self.shape[1:]:
            raise DataError(
                f"{self.files[index]} is {image.shape[2]}x{image.shape[1]}, but {self.files[0]} is "
                f"{self.shape[3]}x{self.shape[2]}: every image of an ImageFolder must have the same size"
            )
        return image

    def _read(self, index: int, mode: str | None = None) -> np.ndarray:
        from PIL import Image

        with reading(Path(self.files[index])), Image.open(self.files[index]) as image:
            if mode is None and image.mode not in ("L", "RGB"):
                mode = "RGB"
            return np.asarray(image.convert(mode) if mode and image.mode != mode else image, dtype=np.uint8)

    @staticmethod
    def _chw(image: np.ndarray) -> np.ndarray:
        return image[None] if image.ndim == 2 else np.ascontiguousarray(image.transpose(2, 0, 1))


class ImageFolder:
    """Your own images in torchvision's ImageFolder layout: `path/train/<class>/<image>` and, if there is an
    official test split, `path/test/<class>/<image>` (otherwise `path/<class>/<image>` or `path/train/`
    alone, and the test split is held out of it). Classes are the sorted dir names, as ImageFolder numbers
    them; the files are listed once, and each image is decoded when a run reads it."""

    needs_download = True  # not made by `prepare.py all=true`: the files are yours to bring
    white = 255.0

    def __init__(self, path: str):
        self.path = Path(path)
        self.name = self.path.name

    def prepare(self, root: Path, download: bool) -> None:
        pass  # nothing to make: the files are read where they are

    def load(self, root: Path, download: bool) -> tuple[LabelledImages, LabelledImages | None]:
        if not self.path.is_dir():
            raise DataError(f"image folder {self.path} not found: expected {self.path}/train/<class>/<image> files")
        train = self.path / "train"
        test = self.path / "test"
        if not train.is_dir():  # the class dirs at the top, no official test split
            return self._split(self.path)[0], None
        train_part, classes = self._split(train)
        if not test.is_dir():
            return train_part, None
        test_part, test_classes = self._split(test)
        if test_classes != classes:  # ImageFolder numbers the classes it finds: the same dirs, the same numbers
            raise DataError(f"the class dirs of {test} ({', '.join(test_classes)}) differ from {train}'s")
        if test_part.images.shape[1:] != train_part.images.shape[1:]:
            raise DataError(f"the images of {test} differ in size or channels from those of {train}")
        return train_part, test_part

    def _split(self, directory: Path) -> tuple[LabelledImages, list[str]]:
        """The images and labels of an ImageFolder dir, and its classes (the labels' names)."""
        from torchvision.datasets import ImageFolder as TorchvisionImageFolder

        try:  # ImageFolder lists the classes and files; the images are decoded later, one by one
            folder = TorchvisionImageFolder(str(directory), loader=lambda path: path)
        except (FileNotFoundError, OSError) as error:
            raise DataError(f"image folder {directory} is unusable: {error}") from error
        images = FolderImages([path for path, _ in folder.samples])
        return LabelledImages(images, torch.tensor(folder.targets)), folder.classes


class SyntheticImages(RowImages):
    """Uniform random pixels, image `row` drawn from a generator seeded by (seed, row); label `row % classes`."""

    def __init__(self, size: int, channels: int, image_size: int, seed: int):
        super().__init__((size, channels, image_size, image_size))
        self.seed = seed

    def row(self, index: int) -> np.ndarray:
        if not 0 <= index < self.shape[0]:
            raise IndexError(f"row {index} of {self.shape[0]}")
        return np.random.default_rng([self.seed, index]).integers(0, 256, self.shape[1:], dtype=np.uint8)


class Synthetic:
    """`size` random images, made on the fly (no files): for measuring the loading paths at any scale, such as
    a shard set larger than memory (`data.loading=shards`), without a dataset of that size. No official test
    split. Nothing can be learnt from it beyond the label frequencies."""

    needs_download = False
    white = 255.0

    def __init__(
        self,
        size: Annotated[int, Positive] = 2000,
        channels: Annotated[int, Positive] = 3,
        image_size: Annotated[int, Positive] = 32,
        num_classes: Annotated[int, Positive] = 10,
        seed: int = 0,
    ):
        self.name = f"synthetic-{size}x{channels}x{image_size}x{image_size}-{num_classes}-seed{seed}"
        self.size, self.channels, self.image_size = size, channels, image_size
        self.num_classes, self.seed = num_classes, seed

    def prepare(self, root: Path, download: bool) -> None:
        pass  # made when read

    def load(self, root: Path, download: bool) -> tuple[LabelledImages, None]:
        images = SyntheticImages(self.size, self.channels, self.image_size, self.seed)
        return LabelledImages(images, torch.arange(self.size) % self.num_classes), None
