"""Detection and segmentation data: a `DetectionSource` or `SemanticSource` (`dlforge.data.sources.dense`,
`dlforge.data.sources.scenes`) read one sample at a time by loader workers, augmented with
torchvision.transforms.v2 (boxes, instance masks and class maps move with their image), and collated
into batches whose images are padded to the batch's largest (bottom and right).

Batches:
  DetectionData:    (images, targets): images float32 (B, 3, H, W) in [0, 1], not normalised (detectors
                    normalise themselves, as torchvision's do); targets a list of B dicts: `boxes` float32
                    (n, 4) xyxy in pixels, `labels` int64 (n,) in 1..K, `masks` uint8 (n, H, W) (with
                    `masks`), `iscrowd` int64 (n,), `image_id` int64 ().
  SegmentationData: (images, masks): images as above, masks int64 (B, H, W) of class ids 0..C-1, 255 where
                    no class counts (the void band, padding).
  ObjectCropData:   (crops, labels): every object of B images as a crop float32 (n, 3, S, S) in [0, 1], and
                    its category int64 (n,) in 0..K-1.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from dlforge.constraints import NonNegative, Positive, Range
from dlforge.data.sources.dense import IGNORE, DetectionSource, SemanticSource
from dlforge.data.tensors import SplitsData, sample_loader
from dlforge.errors import DataError

SPLITS = ("train", "val", "test")
Jitter = Range(ge=0, lt=1)  # a share of the image's size; 0 turns that augmentation off


class DenseSamples(Dataset):
    """A split's samples as batch items. Items drawn with a seed (`(index, seed)`, from a shuffled loader
    with item seeds) are augmented by `augment` from that seed alone; plain indices are not augmented."""

    def __init__(self, split: Dataset, augment: v2.Transform | None, item: Callable):
        self.split, self.augment, self.item = split, augment, item

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, drawn: int | tuple[int, int]):
        index, seed = drawn if isinstance(drawn, tuple) else (drawn, None)
        image, target = self.split[index]  # a PIL image: PIL's affine is faster than torch's on one image
        if seed is not None and self.augment is not None:
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(seed)  # torch.manual_seed also queues every GPU kind's: slow
                image, target = self.augment(image, target)
        image = TF.to_dtype(TF.to_image(image), torch.float32, scale=True)
        return self.item(image.as_subclass(torch.Tensor), target)


def detection_item(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    item = {
        "boxes": target["boxes"].as_subclass(torch.Tensor).to(torch.float32),
        "labels": target["labels"],
        "iscrowd": target["iscrowd"],
        "image_id": target["image_id"],
    }
    if "masks" in target:
        item["masks"] = target["masks"].as_subclass(torch.Tensor).to(torch.uint8)
    return image, item


def object_crops(image: torch.Tensor, target: dict, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every object of the image as a `size` square centred on its box, at the image's scale (an object
    larger than `size`: the square of its box's longer side, scaled down to `size`), moved inside the image
    where it would reach past an edge; labels 1..K as 0..K-1."""
    boxes = target["boxes"].as_subclass(torch.Tensor)
    height, width = image.shape[-2:]
    crops = []
    for x1, y1, x2, y2 in boxes.tolist():
        side = max(size, math.ceil(max(x2 - x1, y2 - y1)))
        top = min(max(round((y1 + y2 - side) / 2), 0), max(height - side, 0))
        left = min(max(round((x1 + x2 - side) / 2), 0), max(width - side, 0))
        crop = TF.crop(image, top, left, side, side)  # pads with black where the image is smaller than side
        crops.append(crop if side == size else TF.resize(crop, [size, size], antialias=True))
    crops = torch.stack(crops) if crops else image.new_zeros(0, image.shape[0], size, size)
    return crops, target["labels"] - 1


def semantic_item(image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return image, mask.as_subclass(torch.Tensor).to(torch.int64)


def padded(tensors: list[torch.Tensor], value: float, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Tensors (..., H, W) stacked, each padded bottom and right with `value` to `size` (H, W), by default
    the largest H and W."""
    height, width = size or (max(t.shape[-2] for t in tensors), max(t.shape[-1] for t in tensors))
    out = tensors[0].new_full((len(tensors), *tensors[0].shape[:-2], height, width), value)
    for row, tensor in zip(out, tensors):
        row[..., : tensor.shape[-2], : tensor.shape[-1]] = tensor
    return out


def collate_detection(items: list) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    images, targets = zip(*items)
    images = padded(list(images), 0.0)
    for target in targets:
        if "masks" in target and target["masks"].shape[-2:] != images.shape[-2:]:
            target["masks"] = padded([target["masks"]], 0, images.shape[-2:])[0]
    return images, list(targets)


def collate_crops(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    crops, labels = zip(*items)
    return torch.cat(crops), torch.cat(labels)


def collate_semantic(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    images, masks = zip(*items)
    return padded(list(images), 0.0), padded(list(masks), IGNORE)


def _labels_and_crowds(sample) -> tuple[torch.Tensor, torch.Tensor]:
    """What SanitizeBoundingBoxes drops with each box it drops (module level: loader workers pickle it)."""
    _, target = sample
    return target["labels"], target["iscrowd"]


class DenseData(SplitsData):
    """What detection and segmentation data share: splits of a source read per sample in `num_workers`
    loader processes, training samples augmented (when `augment`) by a random horizontal flip (`hflip`)
    and a random affine map that scales by up to `scale_jitter` and shifts by up to `translate` of the
    image's sides (parts moved out are cut, boxes clipped, objects left smaller than 2 pixels dropped)."""

    def __init__(
        self,
        source,
        root: str,
        batch_size: int,
        eval_batch_size: int,
        num_workers: int,
        augment: bool,
        hflip: bool,
        scale_jitter: float,
        translate: float,
        download: bool,
        num_classes: int,
    ):
        super().__init__()
        self.source = source
        self.root = Path(root)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.augment = augment
        self.hflip = hflip
        self.scale_jitter = scale_jitter
        self.translate = translate
        self.download = download
        self.num_classes = num_classes
        self.categories: list[str] = []
        self.splits: dict[str, Dataset] = {}

    def prepare_data(self) -> None:
        self.source.prepare(self.root, self.download)

    def augmentation(self, mask_fill: int) -> list[v2.Transform]:
        """The geometric steps; images are filled with black where they uncover nothing, masks with `mask_fill`."""
        steps = [v2.RandomHorizontalFlip()] if self.hflip else []
        if self.scale_jitter or self.translate:
            steps.append(
                v2.RandomAffine(
                    degrees=0,
                    translate=(self.translate, self.translate),
                    scale=(1 - self.scale_jitter, 1 + self.scale_jitter),
                    interpolation=v2.InterpolationMode.BILINEAR,  # masks are always moved by nearest pixels
                    fill={tv_tensors.Mask: mask_fill, "others": 0},
                )
            )
        return steps

    def serve(self, splits: dict[str, Dataset], categories: list[str], augment: v2.Transform, item) -> None:
        if len(categories) != self.num_classes:
            raise DataError(
                f"data.num_classes is {self.num_classes} but {self.source.name} has {len(categories)}: "
                f"{', '.join(categories[:5])}{' ...' if len(categories) > 5 else ''}"
            )
        self.categories = categories
        self.splits = {
            name: DenseSamples(split, augment if name == "train" and self.augment else None, item)
            for name, split in splits.items()
        }

    def loader(self, dataset: Dataset, batch_size: int, shuffle: bool, rank: int, world_size: int) -> DataLoader:
        on_gpu = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return sample_loader(
            dataset,
            batch_size,
            shuffle,
            self.num_workers,
            pin_memory=on_gpu,
            collate_fn=self.collate,
            rank=rank,
            world_size=world_size,
            item_seeds=shuffle and self.augment,
        )


class DetectionData(DenseData):
    """Train/val/test splits of a detection source as `(images, targets)` batches (module docstring),
    `categories[k - 1]` naming label k. `masks`: the targets carry instance masks (Mask R-CNN, mask mAP);
    without them samples load faster. `num_classes` (object categories, background not counted) states
    what the models are built for; it is checked against the data."""

    collate = staticmethod(collate_detection)

    def __init__(
        self,
        source: DetectionSource,
        root: str = "data",
        batch_size: Annotated[int, Positive] = 32,
        eval_batch_size: Annotated[int, Positive] = 64,
        num_workers: Annotated[int, NonNegative] = 1,
        augment: bool = True,
        hflip: bool = True,
        scale_jitter: Annotated[float, Jitter] = 0.1,
        translate: Annotated[float, Jitter] = 0.1,
        masks: bool = True,
        download: bool = False,
        num_classes: Annotated[int, Positive] = 10,
    ):
        super().__init__(
            source, root, batch_size, eval_batch_size, num_workers, augment, hflip, scale_jitter, translate,
            download, num_classes,
        )  # fmt: skip
        self.masks = masks

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        splits = {name: self.source.detection_split(self.root, name, self.masks) for name in SPLITS}
        augment = v2.Compose(
            [
                *self.augmentation(mask_fill=0),
                v2.ClampBoundingBoxes(),
                v2.SanitizeBoundingBoxes(min_size=2, labels_getter=_labels_and_crowds),
            ]
        )
        self.serve(splits, splits["train"].categories, augment, self.item)

    @property
    def item(self) -> Callable:
        """An augmented sample (image tensor, target) -> a batch item."""
        return detection_item


class SegmentationData(DenseData):
    """Train/val/test splits of a semantic source as `(images, masks)` batches (module docstring),
    `categories[c]` naming class c. `num_classes` counts the classes (background included where the
    dataset has one); it is checked against the data."""

    collate = staticmethod(collate_semantic)

    def __init__(
        self,
        source: SemanticSource,
        root: str = "data",
        batch_size: Annotated[int, Positive] = 32,
        eval_batch_size: Annotated[int, Positive] = 64,
        num_workers: Annotated[int, NonNegative] = 1,
        augment: bool = True,
        hflip: bool = True,
        scale_jitter: Annotated[float, Jitter] = 0.1,
        translate: Annotated[float, Jitter] = 0.1,
        download: bool = False,
        num_classes: Annotated[int, Positive] = 11,
    ):
        super().__init__(
            source, root, batch_size, eval_batch_size, num_workers, augment, hflip, scale_jitter, translate,
            download, num_classes,
        )  # fmt: skip

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        splits = {name: self.source.semantic_split(self.root, name) for name in SPLITS}
        augment = v2.Compose(self.augmentation(mask_fill=IGNORE))
        self.serve(splits, splits["train"].classes, augment, semantic_item)


class ObjectCropData(DetectionData):
    """Classification of a detection source's objects, for pretraining a detector's features on the objects it
    will find: every object of `batch_size` images of a split as a `crop_size` square of its image centred on
    its box, at the image's scale (`object_crops`), labelled with its category (0..K-1). Training images are
    augmented as DetectionData's before the crops are cut (`augment` and its settings), so a batch's crop count
    varies with the images' objects."""

    collate = staticmethod(collate_crops)

    def __init__(
        self,
        source: DetectionSource,
        root: str = "data",
        crop_size: Annotated[int, Positive] = 48,
        batch_size: Annotated[int, Positive] = 16,
        eval_batch_size: Annotated[int, Positive] = 64,
        num_workers: Annotated[int, NonNegative] = 1,
        augment: bool = True,
        hflip: bool = True,
        scale_jitter: Annotated[float, Jitter] = 0.1,
        translate: Annotated[float, Jitter] = 0.1,
        download: bool = False,
        num_classes: Annotated[int, Positive] = 10,
    ):
        super().__init__(
            source, root, batch_size, eval_batch_size, num_workers, augment, hflip, scale_jitter, translate,
            masks=False, download=download, num_classes=num_classes,
        )  # fmt: skip
        self.crop_size = crop_size

    @property
    def item(self) -> Callable:
        return functools.partial(object_crops, size=self.crop_size)  # a partial of a module function: workers pickle it
