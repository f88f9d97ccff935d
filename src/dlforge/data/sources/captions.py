"""Images with captions, in COCO Captions' layout, for contrastive text-image training.

A caption file is COCO's `captions_<split>.json`: `images` (`id`, `file_name`) and `annotations` (`id`,
`image_id`, `caption`), the images in a folder beside it. `CaptionSplit` reads one and checks that every
caption's image is there.

CaptionedScenes: the scenes' objects (`dlforge.data.sources.scenes`: real Fashion-MNIST images, tinted and
pasted over real photographs), 1-2 per 64x64 scene, each tinted one of seven named colours, with a caption
made from templates over what is drawn: class, count, size, colour and position, e.g. "a photo of two
sandals: a small red one at the top left and a large blue one on the right" (a training caption names each
attribute of an object with chance `detail`, and always its class: "a photo of a sandal" is true as well).
Train and val scenes never hold an object whose (colour, class) pair is one of `HELD_OUT` (each class with one
colour); every test scene holds at least one, so test retrieval asks for compositions never seen in training.
Objects come from disjoint Fashion-MNIST images per split, as the scenes' do (test: its test split). A quarter
of the backgrounds are plain black, Fashion-MNIST's own.
  images/<split>/<id>.png, annotations/captions_<split>.json, meta.json (the settings they were made with)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NamedTuple, Protocol

import numpy as np

from dlforge.constraints import Chance, Positive
from dlforge.data.files import made_with, prepare_once, reading, staged_dir
from dlforge.data.sources import Source
from dlforge.data.sources.images import TorchvisionImages
from dlforge.data.sources.scenes import SPLITS, background_photos, compose_scene, object_sources
from dlforge.errors import DataError

log = logging.getLogger(__name__)

SIZE = 64
OBJECTS = (1, 2)
OBJECT_PIXELS = (22, 44)
SMALL_BELOW = 32  # an object whose visible box's longer side is shorter than this is "small"
# Fashion-MNIST's classes as captions name them (singular, plural)
NOUNS = (
    ("t-shirt", "t-shirts"),
    ("trouser", "trousers"),
    ("pullover", "pullovers"),
    ("dress", "dresses"),
    ("coat", "coats"),
    ("sandal", "sandals"),
    ("shirt", "shirts"),
    ("sneaker", "sneakers"),
    ("bag", "bags"),
    ("ankle boot", "ankle boots"),
)
COLOURS = {
    "red": (1.0, 0.15, 0.15),
    "green": (0.15, 1.0, 0.15),
    "blue": (0.2, 0.35, 1.0),
    "yellow": (1.0, 1.0, 0.15),
    "cyan": (0.15, 1.0, 1.0),
    "magenta": (1.0, 0.15, 1.0),
    "white": (1.0, 1.0, 1.0),
}
COLOUR_NAMES = tuple(COLOURS)
HELD_OUT = frozenset((category, category % len(COLOURS)) for category in range(len(NOUNS)))  # (class, colour)
ATTRIBUTES = ("size", "colour", "position")
PREFIXES = ("a photo of ", "a picture of ", "an image of ", "")
PLACES = {  # (row, column) thirds of the scene -> phrase
    (0, 0): "at the top left",
    (0, 1): "at the top",
    (0, 2): "at the top right",
    (1, 0): "on the left",
    (1, 1): "in the centre",
    (1, 2): "on the right",
    (2, 0): "at the bottom left",
    (2, 1): "at the bottom",
    (2, 2): "at the bottom right",
}
DEFAULT_COUNTS = {"train": 8000, "val": 500, "test": 1000}
# The chance that a training caption names each attribute of an object ("a photo of a sandal" is as true as
# "a photo of a small red sandal at the top left"). Colour, size and position are easier to see than the class,
# so captions that name them often let the contrast be won without learning the class: zero-shot top-1 on
# Fashion-MNIST after 504 steps was 0.50 at 0.5, 0.64 at 0.25 and 0.66 at 0 (never: no attribute left for
# retrieval to learn) in one probe run each (BENCHMARKS.md).
DEFAULT_DETAIL = 0.25
VERSION = 2  # of the generator: a change to what it draws makes the set anew


class CaptionSource(Source, Protocol):
    """What CaptionsData asks of a set of captioned images."""

    nouns: list[str]  # class names for zero-shot prompts, in label order; empty for a set without classes

    def prepare(self, root: Path, download: bool) -> None:
        """Write or fetch the set's files under `root`, unless they are there."""
        ...

    def split(self, root: Path, split: str) -> CaptionedImages:
        """The captions of `split` (train, val, test) with their image files."""
        ...


class CaptionedImages(NamedTuple):
    paths: list[Path]  # one image per caption (an image with several captions repeats)
    captions: list[str]


def read_caption_file(listing: Path, image_dir: Path) -> CaptionedImages:
    """The captions of a COCO-style caption file with their image files (under `image_dir`), checked to exist."""
    with reading(listing):
        coco = json.loads(listing.read_text())
        files = {image["id"]: image["file_name"] for image in coco["images"]}
        pairs = [
            (annotation["id"], annotation["image_id"], annotation["caption"]) for annotation in coco["annotations"]
        ]
    paths, captions = [], []
    for annotation_id, image_id, caption in pairs:
        if image_id not in files:
            raise DataError(f"{listing}: caption {annotation_id} names image id {image_id}, which `images` lacks")
        path = image_dir / files[image_id]
        if not path.is_file():
            raise DataError(f"{listing}: caption {annotation_id} names image {path}, which does not exist")
        paths.append(path)
        captions.append(caption)
    return CaptionedImages(paths, captions)


def checked_pairs(pairs: list[tuple[Path, str, str]], listing: Path) -> CaptionedImages:
    """(image path, caption, the caption's entry) triples of `listing` as CaptionedImages, every image checked
    to exist."""
    for path, _, entry in pairs:
        if not path.is_file():
            raise DataError(f"{listing}: {entry} names image {path}, which does not exist")
    return CaptionedImages([path for path, _, _ in pairs], [caption for _, caption, _ in pairs])


def held_out(items: list, val: int, test: int, split: str) -> list:
    """`split`'s part of `items`: the last `test` for test, the `val` before them for val, the rest for train
    (which may be empty where another part supplies it)."""
    if val + test > len(items) or test >= len(items):
        raise DataError(f"{len(items)} images cannot hold out {val} for val and {test} for test")
    bounds = {"train": (0, len(items) - val - test), "val": (len(items) - val - test, len(items) - test)}
    start, stop = bounds.get(split, (len(items) - test, len(items)))
    return items[start:stop]


class CocoCaptions:
    """COCO Captions as torchvision's `CocoCaptions` reads it (through pycocotools): `root/<directory>/annotations/
    captions_{train,val}<year>.json` with the images in `root/<directory>/{train,val}<year>/`. Train is the train
    images; the val images are split by id into val (the first ones) and test (the last `test` images). Each of an
    image's captions (about five) is a pair."""

    name = "coco_captions"
    needs_download = True  # not fetched here: point data.root at a copy
    nouns: list[str] = []

    def __init__(self, directory: str = "coco", year: int = 2017, test: Annotated[int, Positive] = 2500):
        self.directory, self.year, self.test = directory, year, test

    def prepare(self, root: Path, download: bool) -> None:
        pass  # read where it is

    def split(self, root: Path, split: str) -> CaptionedImages:
        from torchvision.datasets import CocoCaptions as TorchvisionCoco

        part = "train" if split == "train" else "val"
        base = Path(root) / self.directory
        listing = base / "annotations" / f"captions_{part}{self.year}.json"
        if not listing.is_file():
            raise DataError(f"{listing} not found: data.root must hold COCO's {self.directory}/annotations/")
        with reading(listing):
            dataset = TorchvisionCoco(str(base / f"{part}{self.year}"), str(listing))
        held = len(dataset.ids) - self.test  # the val images before the test ones
        ids = dataset.ids if split == "train" else held_out(dataset.ids, held, self.test, split)
        pairs = [
            (
                Path(dataset.root) / dataset.coco.imgs[image_id]["file_name"],
                annotation["caption"],
                f"caption {annotation['id']}",
            )
            for image_id in ids
            for annotation in dataset.coco.imgToAnns[image_id]
        ]
        return checked_pairs(pairs, listing)


class Flickr30kCaptions:
    """Flickr30k as torchvision's `Flickr30k` reads it: `root/<directory>/<images>/` and the caption file
    (`<image>.jpg#<n>\t<caption>` lines). The images, sorted by name, are split: the last `test` for test, the
    `val` before them for val, the rest for train (Karpathy's split sizes, not his image lists)."""

    name = "flickr30k"
    needs_download = True
    nouns: list[str] = []

    def __init__(
        self,
        directory: str = "flickr30k",
        images: str = "flickr30k-images",
        captions: str = "results_20130124.token",
        val: Annotated[int, Positive] = 1014,
        test: Annotated[int, Positive] = 1000,
    ):
        self.directory, self.images, self.captions = directory, images, captions
        self.val, self.test = val, test

    def prepare(self, root: Path, download: bool) -> None:
        pass  # read where it is

    def split(self, root: Path, split: str) -> CaptionedImages:
        from torchvision.datasets import Flickr30k

        listing = Path(root) / self.directory / self.captions
        if not listing.is_file():
            raise DataError(f"{listing} not found: data.root must hold Flickr30k's {self.directory}/{self.captions}")
        with reading(listing):
            dataset = Flickr30k(str(Path(root) / self.directory / self.images), str(listing))
        pairs = [
            (Path(dataset.root) / name, caption, f"caption {name}#{number}")
            for name in held_out(dataset.ids, self.val, self.test, split)
            for number, caption in enumerate(dataset.annotations[name])
        ]
        return checked_pairs(pairs, listing)


class CaptionedScenes:
    """The captioned scenes, written once into `root/scenes-captions/` (other counts or seeds beside it)."""

    name = "scenes_captions"
    needs_download = True  # made from Fashion-MNIST's files, which no Python package ships

    def __init__(
        self,
        fashion_mnist: TorchvisionImages,
        train: Annotated[int, Positive] = DEFAULT_COUNTS["train"],
        val: Annotated[int, Positive] = DEFAULT_COUNTS["val"],
        test: Annotated[int, Positive] = DEFAULT_COUNTS["test"],
        seed: int = 0,
        detail: Annotated[float, Chance] = DEFAULT_DETAIL,
    ):
        self.fashion_mnist = fashion_mnist
        self.counts = {"train": train, "val": val, "test": test}
        self.seed = seed
        self.detail = detail
        self.nouns = [singular for singular, _ in NOUNS]

    def directory(self, root: Path) -> Path:
        name = "scenes-captions"
        if self.counts != DEFAULT_COUNTS:
            name += "".join(f"-{split}{count}" for split, count in self.counts.items())
        if self.seed:
            name += f"-seed{self.seed}"
        if self.detail != DEFAULT_DETAIL:
            name += f"-detail{self.detail:g}"
        return Path(root) / name

    def settings(self) -> dict:
        return {"version": VERSION, "seed": self.seed, "counts": self.counts, "size": SIZE, "detail": self.detail}

    def prepare(self, root: Path, download: bool) -> None:
        directory = self.directory(root)
        prepare_once(
            directory, lambda: made_with(directory, self.settings()), lambda: self._write(root, directory, download)
        )

    def split(self, root: Path, split: str) -> CaptionedImages:
        directory = self.directory(root)
        if not made_with(directory, self.settings()):
            raise DataError(
                f"{directory} holds no captioned scenes made with data.source's settings: "
                "`python src/prepare.py data=scenes_captions` (with the same settings) makes them"
            )
        return read_caption_file(directory / "annotations" / f"captions_{split}.json", directory / "images" / split)

    def _write(self, root: Path, directory: Path, download: bool) -> None:
        from PIL import Image

        started = time.perf_counter()
        sources = {
            split: (images, labels)
            for split, (images, labels, *_) in object_sources(self.fashion_mnist, root, download).items()
        }
        photos = [*background_photos(), np.zeros((SIZE * 2, SIZE * 2, 3), dtype=np.uint8)]
        with staged_dir(directory) as staged:
            (staged / "annotations").mkdir()
            for split in SPLITS:
                (staged / "images" / split).mkdir(parents=True)
                images, annotations = [], []
                for image_id in range(1, self.counts[split] + 1):
                    canvas, caption, objects = self._scene(split, image_id, *sources[split], photos)
                    file_name = f"{image_id:06d}.png"
                    Image.fromarray(canvas).save(staged / "images" / split / file_name, compress_level=1)
                    images.append({"id": image_id, "file_name": file_name, "width": SIZE, "height": SIZE})
                    annotations.append({"id": image_id, "image_id": image_id, "caption": caption, "objects": objects})
                coco = {"images": images, "annotations": annotations}
                (staged / "annotations" / f"captions_{split}.json").write_text(json.dumps(coco))
            (staged / "meta.json").write_text(json.dumps({"settings": self.settings()}, indent=2))
        seconds = time.perf_counter() - started
        log.info(f"{sum(self.counts.values())} captioned scenes written to {directory} in {seconds:.0f} s")

    def _scene(
        self, split: str, image_id: int, images: np.ndarray, labels: np.ndarray, photos: list[np.ndarray]
    ) -> tuple[np.ndarray, str, list[dict]]:
        """Scene `image_id` of `split`, drawn from (seed, split, image_id, attempt) until its (colour, class)
        pairs fit the split: none held out (train, val), at least one (test)."""
        attempt = 0
        while True:
            rng = np.random.default_rng([self.seed, SPLITS.index(split), image_id, attempt])
            colours: list[int] = []
            tint = recording_tint(colours)
            canvas, instances = compose_scene(images, labels, photos, rng, SIZE, OBJECTS, OBJECT_PIXELS, tint)
            held_out = any((category - 1, colour) in HELD_OUT for (category, _, _), colour in zip(instances, colours))
            if instances and held_out == (split == "test"):
                objects = [
                    describe(category - 1, mask, colour) for (category, mask, _), colour in zip(instances, colours)
                ]
                prefix = PREFIXES[int(rng.integers(len(PREFIXES)))]
                named = None  # val and test captions name every attribute (retrieval asks for all of them)
                if split == "train":
                    named = [{key for key in ATTRIBUTES if rng.random() < self.detail} for _ in objects]
                return canvas, caption(objects, prefix, named), objects
            attempt += 1


def recording_tint(chosen: list[int]) -> Callable[[np.random.Generator], np.ndarray]:
    """A tint for `compose_scene`: one of COLOURS, drawn, its index appended to `chosen`."""

    def tint(rng: np.random.Generator) -> np.ndarray:
        chosen.append(int(rng.integers(len(COLOURS))))
        return np.array(COLOURS[COLOUR_NAMES[chosen[-1]]])

    return tint


def describe(category: int, mask: np.ndarray, colour: int) -> dict:
    """An object's attributes as captions name them, from what is visible of it (`mask`)."""
    rows, cols = np.nonzero(mask)
    side = max(rows.max() + 1 - rows.min(), cols.max() + 1 - cols.min())
    centre_row, centre_col = (rows.min() + rows.max() + 1) / 2, (cols.min() + cols.max() + 1) / 2
    place = (min(int(3 * centre_row / mask.shape[0]), 2), min(int(3 * centre_col / mask.shape[1]), 2))
    return {
        "category": category,
        "colour": COLOUR_NAMES[colour],
        "size": "small" if side < SMALL_BELOW else "large",
        "position": PLACES[place],
    }


def phrase(item: dict, noun: str, named: set[str]) -> str:
    """ "a small red sandal at the top left", with the `named` attributes of the object only."""
    words = ["a", *(item[key] for key in ("size", "colour") if key in named), noun]
    return " ".join([*words, item["position"]] if "position" in named else words)


def caption(objects: list[dict], prefix: str, named: list[set[str]] | None = None) -> str:
    """`prefix` + "a small red sandal at the top left", "two sandals: a small red one ... and a large blue
    one ...", or "a ... and a ..." for two objects of different classes; of each object the attributes
    in its `named` set only (default: all)."""
    named = named or [set(ATTRIBUTES)] * len(objects)
    if len(objects) == 2 and objects[0]["category"] == objects[1]["category"]:
        parts = [phrase(item, "one", keys) for item, keys in zip(objects, named) if keys]
        details = f": {' and '.join(parts)}" if len(parts) == 2 else ""
        return f"{prefix}two {NOUNS[objects[0]['category']][1]}{details}"
    return prefix + " and ".join(phrase(item, NOUNS[item["category"]][0], keys) for item, keys in zip(objects, named))
