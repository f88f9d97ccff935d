"""Scenes: real Fashion-MNIST objects composed over real photographs, for detection and segmentation offline.

Each 128x128 RGB scene holds 1-5 Fashion-MNIST images, rescaled to 20-64 pixels and tinted, pasted over a
random crop of a photograph that ships with scikit-learn (china.jpg, flower.jpg) or matplotlib
(grace_hopper.jpg). An object's pixels are those of its Fashion-MNIST image brighter than `THRESHOLD`
and the holes they enclose; later objects cover earlier ones, but only where every earlier object keeps
`MIN_VISIBLE` of its pixels. What stays visible of an object is its instance mask, and its box is the
mask's tight box.

The scenes are written once into `root/scenes/` (`Scenes.directory`), in two public formats:
  images/<split>/<id>.png              the scenes (PNG: lossless)
  annotations/instances_<split>.json   COCO: boxes, RLE masks, categories 1..10 (Fashion-MNIST's classes)
  labels/<split>/<id>.png              VOC-style class maps (palette PNGs): class id per pixel, 0 the
                                       background, 255 ("void") on a 1-pixel band around every outline
  meta.json                            the settings they were made with
Train and val scenes take their objects from disjoint parts of Fashion-MNIST's training images, test
scenes from its test images. Everything follows from `seed`.
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import numpy as np

from dlforge.constraints import Positive
from dlforge.data.files import made_with, prepare_once, reading, staged_dir
from dlforge.data.sources.dense import CocoSplit, LabelMapSplit
from dlforge.data.sources.images import TorchvisionImages
from dlforge.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SIZE = 128
OBJECTS_PER_SCENE = (1, 5)
OBJECT_PIXELS = (20, 64)  # side of the rescaled 28x28 Fashion-MNIST image
THRESHOLD = 40  # Fashion-MNIST intensity (0-255) above which a pixel belongs to the object
MIN_VISIBLE = 0.7  # of its pixels each object keeps when later ones are placed over it
PLACEMENT_TRIES = 20
VAL_SOURCE_IMAGES = 6000  # the last Fashion-MNIST training images, the val scenes' only objects
VOID = 255
BACKGROUND_PHOTOS = ("china.jpg", "flower.jpg", "grace_hopper.jpg")
DEFAULT_COUNTS = {"train": 6000, "val": 500, "test": 1000}
VERSION = 2  # of the generator: a change to what it draws makes scenes anew


def category_names() -> list[str]:
    from torchvision.datasets import FashionMNIST

    return list(FashionMNIST.classes)


class Scenes:
    """The generated scenes; `fashion_mnist` is the source of their objects (its files: Debian's
    dataset-fashion-mnist, or a download with data.download=true). Scene counts other than the defaults
    (or another seed) are written beside the default set, never over it."""

    name = "scenes"
    needs_download = True  # made from Fashion-MNIST's files, which no Python package ships: not in `all=true`

    def __init__(
        self,
        fashion_mnist: TorchvisionImages,
        train: Annotated[int, Positive] = DEFAULT_COUNTS["train"],
        val: Annotated[int, Positive] = DEFAULT_COUNTS["val"],
        test: Annotated[int, Positive] = DEFAULT_COUNTS["test"],
        seed: int = 0,
    ):
        self.fashion_mnist = fashion_mnist
        self.counts = {"train": train, "val": val, "test": test}
        self.seed = seed
        self.categories = category_names()

    def directory(self, root: Path) -> Path:
        name = "scenes"
        if self.counts != DEFAULT_COUNTS:
            name += "".join(f"-{split}{count}" for split, count in self.counts.items())
        if self.seed:
            name += f"-seed{self.seed}"
        return Path(root) / name

    def settings(self) -> dict:
        return {"version": VERSION, "seed": self.seed, "counts": self.counts, "size": SIZE}

    def prepare(self, root: Path, download: bool) -> None:
        """Write the scenes, unless scenes made with the same settings are there."""
        directory = self.directory(root)
        prepare_once(
            directory, lambda: made_with(directory, self.settings()), lambda: self._write(root, directory, download)
        )

    def detection_split(self, root: Path, split: str, masks: bool) -> CocoSplit:
        directory = self._checked(root)
        return CocoSplit(directory / "annotations" / f"instances_{split}.json", directory / "images" / split, masks)

    def semantic_split(self, root: Path, split: str) -> LabelMapSplit:
        directory = self._checked(root)
        listing = directory / "annotations" / f"instances_{split}.json"
        with reading(listing):
            names = [image["file_name"] for image in json.loads(listing.read_text())["images"]]
        images, label_maps = ([directory / kind / split / name for name in names] for kind in ("images", "labels"))
        return LabelMapSplit(images, label_maps, ["background", *self.categories], listing)

    def _checked(self, root: Path) -> Path:
        directory = self.directory(root)
        if not made_with(directory, self.settings()):
            raise DataError(
                f"{directory} holds no scenes made with data.source's settings: `python src/prepare.py data=scenes` "
                "(with the same settings) makes them"
            )
        return directory

    def _write(self, root: Path, directory: Path, download: bool) -> None:
        started = time.perf_counter()
        _objects.update(object_sources(self.fashion_mnist, root, download))
        _photos[:] = background_photos()
        with staged_dir(directory) as staged:
            for split in SPLITS:
                for folder in ("images", "labels"):
                    (staged / folder / split).mkdir(parents=True)
            jobs = [
                (staged, split, image_id, self.seed)
                for split in SPLITS
                for image_id in range(1, self.counts[split] + 1)
            ]
            # Scenes are drawn from their own seeds, so processes may make them in any order: fork shares the
            # objects and photos with them.
            with multiprocessing.get_context("fork").Pool(len(os.sched_getaffinity(0))) as pool:
                scenes = pool.map(_write_scene, jobs, chunksize=32)
            coco_categories = [{"id": index, "name": name} for index, name in enumerate(self.categories, start=1)]
            for split in SPLITS:
                images, annotations = [], []
                for (_, scene_split, image_id, _), instances in zip(jobs, scenes):
                    if scene_split == split:
                        images.append(
                            {"id": image_id, "file_name": f"{image_id:06d}.png", "width": SIZE, "height": SIZE}
                        )
                        annotations += [
                            {"id": len(annotations) + n, **instance} for n, instance in enumerate(instances, 1)
                        ]
                coco = {"images": images, "annotations": annotations, "categories": coco_categories}
                (staged / "annotations").mkdir(exist_ok=True)
                (staged / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
            meta = {"settings": self.settings(), "categories": self.categories}
            (staged / "meta.json").write_text(json.dumps(meta, indent=2))
        _objects.clear()
        _photos.clear()
        log.info(f"{sum(self.counts.values())} scenes written to {directory} in {time.perf_counter() - started:.0f} s")


def object_sources(
    fashion_mnist: TorchvisionImages, root: Path, download: bool
) -> dict[str, tuple[np.ndarray, np.ndarray, str, int]]:
    """Per split, the Fashion-MNIST images ((n, 28, 28) uint8) and labels its objects come from, their
    Fashion-MNIST split and the index of the first: train and val from disjoint parts of the training images
    (val the last `VAL_SOURCE_IMAGES`), test from the test images."""
    train_part, test_part = fashion_mnist.load(root, download)
    first_val = len(train_part.labels) - VAL_SOURCE_IMAGES
    train_images, test_images = np.asarray(train_part.images)[:, 0], np.asarray(test_part.images)[:, 0]
    train_labels, test_labels = train_part.labels.numpy(), test_part.labels.numpy()
    return {
        "train": (train_images[:first_val], train_labels[:first_val], "train", 0),
        "val": (train_images[first_val:], train_labels[first_val:], "train", first_val),
        "test": (test_images, test_labels, "test", 0),
    }


_objects: dict[str, tuple[np.ndarray, np.ndarray, str, int]] = {}  # what `_write_scene` draws from, per split
_photos: list[np.ndarray] = []


def background_photos() -> list[np.ndarray]:
    """The photographs that ship with scikit-learn and matplotlib, as uint8 RGB arrays."""
    import matplotlib.cbook
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = list(load_sample_images().images)  # china.jpg, flower.jpg
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as file:
        photos.append(np.asarray(Image.open(file).convert("RGB")))
    return photos


def _write_scene(job: tuple[Path, str, int, int]) -> list[dict]:
    """Write scene `image_id` of `split` (its image and class map), drawn from (seed, split, image_id);
    returns its COCO annotations, without their ids."""
    from PIL import Image
    from pycocotools import mask as coco_mask

    directory, split, image_id, seed = job
    images, labels, source_split, first = _objects[split]
    rng = np.random.default_rng([seed, SPLITS.index(split), image_id])
    canvas, instances = compose_scene(images, labels, _photos, rng)
    file_name = f"{image_id:06d}.png"
    Image.fromarray(canvas).save(directory / "images" / split / file_name, compress_level=1)  # 3x faster, +8 %
    label_map = Image.fromarray(semantic_map(instances), mode="P")
    label_map.putpalette(voc_palette())
    label_map.save(directory / "labels" / split / file_name)
    annotations = []
    for category, mask, index in instances:
        rows, cols = np.nonzero(mask)
        x, y = int(cols.min()), int(rows.min())
        rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        annotations.append(
            {
                "image_id": image_id,
                "category_id": category,
                "bbox": [x, y, int(cols.max()) + 1 - x, int(rows.max()) + 1 - y],
                "area": int(mask.sum()),
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "iscrowd": 0,
                "fashion_mnist": {"split": source_split, "index": first + index},  # the object's own image
            }
        )
    return annotations


def random_tint(rng: np.random.Generator) -> np.ndarray:
    """A random colour at full brightness, so dark photos still show the object."""
    tint = rng.uniform(0.25, 1.0, size=3)
    return tint / tint.max()


def compose_scene(
    images: np.ndarray,
    labels: np.ndarray,
    photos: list[np.ndarray],
    rng: np.random.Generator,
    size: int = SIZE,
    objects: tuple[int, int] = OBJECTS_PER_SCENE,
    pixels: tuple[int, int] = OBJECT_PIXELS,
    tint: Callable[[np.random.Generator], np.ndarray] = random_tint,
) -> tuple[np.ndarray, list[tuple[int, np.ndarray, int]]]:
    """One scene (size x size x 3 uint8) and its instances (category id, visible mask, index of the image
    in `images`), bottom first: `objects` (least, most) objects of `pixels` (least, most) a side, each
    coloured by `tint` (called once per placed object, in order)."""
    from scipy.ndimage import binary_fill_holes

    canvas = _background(photos, rng, size)
    instances: list[tuple[int, np.ndarray, int]] = []
    areas: list[int] = []  # each instance's pixels before anything covered it
    for _ in range(rng.integers(objects[0], objects[1] + 1)):
        index = int(rng.integers(len(images)))
        intensity = _rescaled(images[index], int(rng.integers(pixels[0], pixels[1] + 1)))
        shape = binary_fill_holes(intensity > THRESHOLD)  # dark patterns inside a garment are the garment
        if not shape.any():
            continue
        placed = _place(shape, [mask for _, mask, _ in instances], areas, rng, size)
        if placed is None:
            continue  # no place leaves the others visible enough: the scene has one object fewer
        top, left = placed
        mask = np.zeros((size, size), dtype=bool)
        mask[top : top + shape.shape[0], left : left + shape.shape[1]] = shape
        for _, other, _ in instances:
            other &= ~mask
        colour = tint(rng)
        texture = np.zeros((size, size), dtype=np.float32)
        texture[top : top + shape.shape[0], left : left + shape.shape[1]] = intensity
        shade = 0.3 + 0.7 * texture[mask, None] / 255.0  # keep Fashion-MNIST's texture inside the object
        canvas[mask] = np.clip(255.0 * shade * colour, 0, 255).astype(np.uint8)
        instances.append((int(labels[index]) + 1, mask, index))
        areas.append(int(shape.sum()))
    return canvas, instances


def _background(photos: list[np.ndarray], rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A random square crop (128 pixels to the photo's short side) of a random photo, scaled to `size`."""
    from PIL import Image

    photo = photos[int(rng.integers(len(photos)))]
    side = int(rng.integers(SIZE, min(photo.shape[:2]) + 1))
    top = int(rng.integers(photo.shape[0] - side + 1))
    left = int(rng.integers(photo.shape[1] - side + 1))
    crop = Image.fromarray(photo[top : top + side, left : left + side]).resize((size, size), Image.BILINEAR)
    crop = np.asarray(crop)
    return np.array(crop[:, ::-1] if rng.random() < 0.5 else crop)  # a writable copy


def _rescaled(image: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR))


def _place(
    shape: np.ndarray, masks: list[np.ndarray], areas: list[int], rng: np.random.Generator, size: int = SIZE
) -> tuple[int, int] | None:
    """A random position for `shape` inside the canvas where every object below keeps MIN_VISIBLE of its
    pixels (`areas`) visible (the first that does, of PLACEMENT_TRIES)."""
    height, width = shape.shape
    for _ in range(PLACEMENT_TRIES):
        top, left = int(rng.integers(size - height + 1)), int(rng.integers(size - width + 1))
        window = (slice(top, top + height), slice(left, left + width))
        if all(mask.sum() - (mask[window] & shape).sum() >= MIN_VISIBLE * area for mask, area in zip(masks, areas)):
            return top, left
    return None


def semantic_map(instances: list[tuple[int, np.ndarray, int]]) -> np.ndarray:
    """Class id per pixel (0 where no object is), VOID on a band 1 pixel wide along every outline, as VOC
    marks its object boundaries: on the pixels (of the background, or of an object below) next to an
    object above them, so that thin parts (a sandal's straps) keep their class."""
    from scipy.ndimage import maximum_filter

    classes = np.zeros((SIZE, SIZE), dtype=np.uint8)
    owner = np.zeros((SIZE, SIZE), dtype=np.int32)  # which instance (1-based) shows at a pixel
    for number, (category, mask, _) in enumerate(instances, start=1):
        classes[mask] = category
        owner[mask] = number
    classes[maximum_filter(owner, size=3, mode="nearest") > owner] = VOID
    return classes


@functools.cache
def voc_palette() -> list[int]:
    """Pascal VOC's colour map (as its SegmentationClass PNGs carry it): class i's colour from the bits of i."""
    palette = []
    for index in range(256):
        red = green = blue = 0
        value = index
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette += [red, green, blue]
    return palette
