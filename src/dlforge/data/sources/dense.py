"""Datasets for detection and segmentation in their published layouts, read per sample through torchvision's
dataset classes, with their annotations checked first: an annotation that cannot be right (a box outside
its image, an unknown category, a missing image, a file that does not parse) stops the run with one line
naming the file and the entry.

Detection items are `(image, target)`: a PIL image and a dict of tv_tensors, `boxes` (BoundingBoxes, xyxy),
`labels` (int64, 1..K), `masks` (Mask, (n, H, W), where the dataset has them), `iscrowd` (int64) and
`image_id`. Semantic items are `(image, mask)`: a PIL image and a Mask (H, W) of class ids, 255 ignored.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Protocol

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.datasets import CocoDetection, VisionDataset, wrap_dataset_for_transforms_v2

from dlforge.data.sources import Source
from dlforge.errors import DataError, some

IGNORE = 255  # the class id of pixels no metric or loss counts (VOC's "void")
BOX_TOLERANCE = 1.0  # pixels a box may reach past its image: published annotations round coordinates


class DetectionSource(Source, Protocol):
    """What DetectionData asks of a dataset with boxes (and instance masks)."""

    def prepare(self, root: Path, download: bool) -> None:
        """Write the dataset's files under `root`, unless they are there (sources the user supplies: nothing)."""
        ...

    def detection_split(self, root: Path, split: str, masks: bool) -> DetectionSplit:
        """One split's samples (with instance masks if `masks`), its annotations checked."""
        ...


class SemanticSource(Source, Protocol):
    """What SegmentationData asks of a dataset with class maps."""

    def prepare(self, root: Path, download: bool) -> None: ...

    def semantic_split(self, root: Path, split: str) -> SemanticSplit:
        """One split's samples, its files checked."""
        ...


class DetectionSplit(Protocol):
    """A map-style dataset of detection items whose labels 1..K name `categories[k - 1]`."""

    categories: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int): ...


class SemanticSplit(Protocol):
    """A map-style dataset of semantic items whose class ids 0..C-1 name `classes[c]`."""

    classes: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int): ...


# --- COCO ---------------------------------------------------------------------------------------------


class CocoSplit(Dataset):
    """A COCO-format split (an `instances_*.json` and its image dir) read by torchvision's CocoDetection
    and its transforms-v2 wrapper, with category ids mapped to labels 1..K in the file's order of ids."""

    def __init__(self, annotation_file: Path, image_dir: Path, masks: bool):
        coco = checked_coco(Path(annotation_file), Path(image_dir))
        ids = sorted(coco.cats)
        self.categories = [coco.cats[category]["name"] for category in ids]
        self.labels = {category: label for label, category in enumerate(ids, start=1)}
        keys = {"image_id", "boxes", "labels", "iscrowd"} | ({"masks"} if masks else set())
        self.dataset = wrap_dataset_for_transforms_v2(_CheckedCoco(image_dir, coco), target_keys=keys)
        self.masks = masks

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, target = self.dataset[index]
        size = (image.height, image.width)
        if "boxes" not in target:  # an image without annotations: the wrapper gives its id alone
            target["boxes"] = tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=size)
            target["labels"] = torch.zeros(0, dtype=torch.int64)
            target["iscrowd"] = []
            if self.masks:
                target["masks"] = tv_tensors.Mask(torch.zeros(0, *size, dtype=torch.uint8))
        target["labels"] = torch.tensor([self.labels[int(c)] for c in target["labels"]], dtype=torch.int64)
        target["iscrowd"] = torch.as_tensor(target["iscrowd"], dtype=torch.int64)
        target["image_id"] = torch.tensor(target["image_id"], dtype=torch.int64)
        return image, target


class _CheckedCoco(CocoDetection):
    """CocoDetection over an index read and checked before: its own __init__ would read the file again."""

    def __init__(self, image_dir: Path, coco):
        VisionDataset.__init__(self, str(image_dir))
        self.coco, self.ids = coco, sorted(coco.imgs)


def checked_coco(path: Path, image_dir: Path):
    """The pycocotools COCO index of `path`, once every entry is found consistent."""
    from pycocotools.coco import COCO

    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError as error:
        raise DataError(
            f"{path} not found (COCO's layout: annotations/instances_<split>.json and the images in <split>/ "
            "under data.root)"
        ) from error
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DataError(f"{path}: malformed JSON ({' '.join(str(error).split())})") from error
    entry = "the file"
    try:
        images = {}
        for image in data["images"]:
            entry = f"image {image.get('id')}"
            images[image["id"]] = (image["file_name"], int(image["width"]), int(image["height"]))
        categories = {}
        for category in data["categories"]:
            entry = f"category {category.get('id')}"
            categories[category["id"]] = str(category["name"])
        for number, annotation in enumerate(data["annotations"]):
            entry = f"annotation {annotation.get('id', f'#{number}')} (image {annotation.get('image_id')})"
            _check_annotation(annotation, images, categories)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        reason = f"no {error}" if isinstance(error, KeyError) else " ".join(str(error).split())
        raise DataError(f"{path}: {entry}: not a COCO instances entry ({reason})") from error
    except _Inconsistent as error:
        raise DataError(f"{path}: {entry}: {error}") from error
    missing = [image_id for image_id, (name, _, _) in images.items() if not (image_dir / name).is_file()]
    if missing:
        shown = some(f"image {image_id} ({image_dir / images[image_id][0]})" for image_id in missing)
        raise DataError(f"{path}: {len(missing)} images not found: {shown}")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco.createIndex()
    return coco


class _Inconsistent(Exception):
    pass


def _check_annotation(annotation: dict, images: dict, categories: dict) -> None:
    if annotation["image_id"] not in images:
        raise _Inconsistent("no image of that id")
    category = annotation["category_id"]
    if category not in categories:
        raise _Inconsistent(f"unknown category id {category} (the file's: {some(map(str, categories), 5)})")
    _, width, height = images[annotation["image_id"]]
    x, y, w, h = (float(value) for value in annotation["bbox"])
    if w < 0 or h < 0 or x < -BOX_TOLERANCE or y < -BOX_TOLERANCE:
        raise _Inconsistent(f"box {annotation['bbox']} (x, y, width, height) has a negative coordinate or size")
    if x + w > width + BOX_TOLERANCE or y + h > height + BOX_TOLERANCE:
        raise _Inconsistent(f"box {annotation['bbox']} (x, y, width, height) outside the {width}x{height} image")


# --- class maps ---------------------------------------------------------------------------------------


class LabelMapSplit(Dataset):
    """Images and their class maps (PNG, one id per pixel), paired by position. `lookup` maps the ids
    the files store to class ids (Cityscapes' labelIds to its train ids); unmapped files store them."""

    def __init__(self, images: list[Path], label_maps: list[Path], classes: list[str], listing: Path, lookup=None):
        missing = [str(path) for path in (*images, *label_maps) if not Path(path).is_file()]
        if missing:
            raise DataError(f"{listing}: {len(missing)} files it lists not found: {some(missing)}")
        if not images:
            raise DataError(f"{listing}: no images")
        self.images, self.label_maps, self.classes = list(images), list(label_maps), classes
        self.lookup = None if lookup is None else torch.as_tensor(lookup, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        import numpy as np
        from PIL import Image

        image = Image.open(self.images[index]).convert("RGB")
        with Image.open(self.label_maps[index]) as file:  # palette PNGs: the palette indices are the ids
            ids = torch.from_numpy(np.array(file)).to(torch.int64)
        if ids.shape != (image.height, image.width):
            raise DataError(
                f"{self.label_maps[index]}: {ids.shape[1]}x{ids.shape[0]} class map for the "
                f"{image.width}x{image.height} image {self.images[index]}"
            )
        return image, tv_tensors.Mask(ids if self.lookup is None else self.lookup[ids])


# --- the public datasets, in their published layouts ---------------------------------------------------

DEFAULT_SPLITS = {"train": "train", "val": "val", "test": "val"}  # their test labels are not published


class Coco:
    """COCO in its published layout under `root`: annotations/instances_<name>.json and the images in
    <name>/, for each split's `<name>` in `splits` (2017: train2017, val2017). Categories are the
    annotation file's, labels 1..K in the order of their ids (COCO's 80 of ids 1..90)."""

    name = "coco"
    needs_download = True  # the user's copy (cocodataset.org), never made here

    def __init__(self, splits: dict[str, str] | None = None):
        self.splits = splits or {"train": "train2017", "val": "val2017", "test": "val2017"}

    def prepare(self, root: Path, download: bool) -> None:
        _user_supplied(self.name, download)

    def detection_split(self, root: Path, split: str, masks: bool) -> CocoSplit:
        name = self.splits[split]
        return CocoSplit(Path(root) / "annotations" / f"instances_{name}.json", Path(root) / name, masks)


class PascalVOC:
    """Pascal VOC in its published layout under `root` (VOCdevkit/VOC<year>/: JPEGImages, Annotations,
    SegmentationClass, ImageSets), read by torchvision's VOCDetection and VOCSegmentation; `splits` name
    the image sets. Detection labels 1..20 are VOC's classes; objects marked difficult are crowds
    (`iscrowd`), which COCO's evaluation neither rewards nor counts against a detector. Class maps: 0 the
    background, 1..20 the classes, 255 the void outlines."""

    name = "voc"
    needs_download = True

    def __init__(self, year: str = "2012", splits: dict[str, str] | None = None):
        self.year = year
        self.splits = splits or DEFAULT_SPLITS

    def prepare(self, root: Path, download: bool) -> None:
        _user_supplied(self.name, download)

    def detection_split(self, root: Path, split: str, masks: bool) -> VocDetectionSplit:
        if masks:
            raise DataError("Pascal VOC has no instance masks: set data.masks=false")
        return VocDetectionSplit(self._open("VOCDetection", root, split))

    def semantic_split(self, root: Path, split: str) -> LabelMapSplit:
        dataset = self._open("VOCSegmentation", root, split)
        listing = Path(dataset.root) / _voc_dir(self.year) / "ImageSets" / "Segmentation" / f"{self.splits[split]}.txt"
        return LabelMapSplit(dataset.images, dataset.targets, ["background", *VOC_CATEGORIES], listing)

    def _open(self, kind: str, root: Path, split: str):
        from torchvision import datasets

        try:
            return getattr(datasets, kind)(str(root), year=self.year, image_set=self.splits[split])
        except (RuntimeError, OSError) as error:  # no VOCdevkit dir; no image set file
            raise DataError(
                f"Pascal VOC {self.year} ({self.splits[split]} images) not found under {root}: {error} "
                f"(expected {Path(root) / _voc_dir(self.year)}/ImageSets, JPEGImages, ...; set data.root)"
            ) from error


def _voc_dir(year: str) -> str:
    from torchvision.datasets.voc import DATASET_YEAR_DICT

    return DATASET_YEAR_DICT[year]["base_dir"]


VOC_CATEGORIES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip


class VocDetectionSplit(Dataset):
    """VOCDetection's items as detection items, every annotation file checked first."""

    def __init__(self, dataset):
        for image, annotation in zip(dataset.images, dataset.annotations):
            _check_voc(Path(annotation), Path(image))
        self.dataset = wrap_dataset_for_transforms_v2(dataset, target_keys={"boxes", "labels", "annotation"})
        self.categories = VOC_CATEGORIES

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, target = self.dataset[index]
        difficult = [int(item.get("difficult", 0)) for item in target.pop("annotation")["object"]]
        target["iscrowd"] = torch.tensor(difficult, dtype=torch.int64)
        target["image_id"] = torch.tensor(index, dtype=torch.int64)  # VOC names images, it does not number them
        return image, target


def _check_voc(path: Path, image: Path) -> None:
    import xml.etree.ElementTree as ET

    from torchvision.datasets import VOCDetection

    if not image.is_file():
        raise DataError(f"{path}: its image {image} not found")
    try:
        annotation = VOCDetection.parse_voc_xml(ET.parse(path).getroot())["annotation"]
    except FileNotFoundError as error:
        raise DataError(f"{path} not found (listed in the image set)") from error
    except (ET.ParseError, OSError) as error:
        raise DataError(f"{path}: malformed XML ({error})") from error
    entry = "size"
    try:
        width, height = int(annotation["size"]["width"]), int(annotation["size"]["height"])
        objects = annotation.get("object", [])
        for number, item in enumerate(objects if isinstance(objects, list) else [objects], start=1):
            entry = f"object {number}"
            if item["name"] not in VOC_CATEGORIES:
                raise _Inconsistent(f"unknown category {item['name']!r} (VOC's: {some(VOC_CATEGORIES, 5)})")
            box = [float(item["bndbox"][key]) for key in ("xmin", "ymin", "xmax", "ymax")]
            if not (0 <= box[0] < box[2] <= width + BOX_TOLERANCE and 0 <= box[1] < box[3] <= height + BOX_TOLERANCE):
                raise _Inconsistent(f"box {box} (xmin, ymin, xmax, ymax) outside the {width}x{height} image")
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"{path}: {entry}: not a VOC annotation ({' '.join(str(error).split())})") from error
    except _Inconsistent as error:
        raise DataError(f"{path}: {entry}: {error}") from error


class Cityscapes:
    """Cityscapes' fine annotations in their published layout under `root` (leftImg8bit/<split>/<city>/,
    gtFine/<split>/<city>/*_gtFine_labelIds.png), read by torchvision's Cityscapes: the label ids are
    mapped to the 19 classes of the benchmark (train ids 0..18), every other id to 255 (ignored)."""

    name = "cityscapes"
    needs_download = True

    def __init__(self, splits: dict[str, str] | None = None):
        self.splits = splits or DEFAULT_SPLITS

    def prepare(self, root: Path, download: bool) -> None:
        _user_supplied(self.name, download)

    def semantic_split(self, root: Path, split: str) -> LabelMapSplit:
        from torchvision.datasets import Cityscapes as CityscapesDataset

        try:
            dataset = CityscapesDataset(str(root), split=self.splits[split], mode="fine", target_type="semantic")
        except (RuntimeError, OSError) as error:
            raise DataError(
                f"Cityscapes ({self.splits[split]}) not found under {root}: {error} (expected leftImg8bit/ and "
                "gtFine/ there; set data.root)"
            ) from error
        trained = sorted((c for c in CityscapesDataset.classes if 0 <= c.train_id < IGNORE), key=lambda c: c.train_id)
        lookup = [IGNORE] * 256
        for item in trained:
            lookup[item.id] = item.train_id
        listing = Path(root) / "gtFine" / self.splits[split]
        return LabelMapSplit(
            dataset.images, [t[0] for t in dataset.targets], [c.name for c in trained], listing, lookup
        )


def _user_supplied(name: str, download: bool) -> None:
    if download:
        raise DataError(f"{name} is not downloaded by dlforge: fetch it from its publisher and set data.root to it")
