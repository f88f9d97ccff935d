"""Video classification data: a `VideoSource` (`dlforge.data.sources.moving`, `dlforge.data.sources.videos`)
whose splits are clips read (or decoded) one at a time by loader workers and collated into batches.

Batches: (clips, labels): clips float32 (B, frames, channels, height, width), pixel values scaled into
[0, 1]; labels int64 (B,) class ids, `classes[id]` naming them.

`view` serves the clips as they are (`clip`), or as the honesty baselines see them: each clip's frames in
an order of their own (`shuffled`, the same order every epoch and run: what is left is what the frames
show as a set), or its middle frame alone (`single_frame`, frames = 1: what one frame shows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dlforge.constraints import NonNegative, Positive
from dlforge.data.sources import Source
from dlforge.data.sources.moving import LabelledClips
from dlforge.data.tensors import SplitsData, sample_loader
from dlforge.errors import DataError

SPLITS = ("train", "val", "test")
View = Literal["clip", "shuffled", "single_frame"]


class VideoSource(Source, Protocol):
    """What VideoClassificationData asks of a video dataset."""

    classes: list[str]  # class id -> name

    def prepare(self, root: Path, download: bool) -> None:
        """Write or fetch the dataset's files under `root`, unless they are there."""
        ...

    def load(self, root: Path, download: bool) -> dict[str, LabelledClips]:
        """The train, val and test splits: clips (N, frames, channels, height, width) uint8, indexed one clip
        at a time (a memory-mapped array, or videos decoded when indexed), and their labels."""
        ...


class ClipSamples(Dataset):
    """One split's clips as float tensors in [0, 1], seen as `view` says (module docstring); `order_seed`
    draws the shuffled view's frame orders, per clip."""

    def __init__(self, part: LabelledClips, view: View, order_seed: int):
        self.part, self.view, self.order_seed = part, view, order_seed

    def __len__(self) -> int:
        return len(self.part.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        clip = np.array(self.part.clips[index])  # a copy: the memory-mapped file is read-only
        frames = len(clip)
        if self.view == "shuffled":
            clip = clip[np.random.default_rng([self.order_seed, index]).permutation(frames)]
        elif self.view == "single_frame":
            clip = clip[frames // 2 : frames // 2 + 1]
        return torch.from_numpy(np.ascontiguousarray(clip)).float() / 255.0, self.part.labels[index]


class VideoClassificationData(SplitsData):
    """Train/val/test splits of a video source as `(clips, labels)` batches (module docstring), read per
    sample in `num_workers` loader processes (0: in the training process). `num_classes`, `frames`,
    `channels` and `image_size` state what the models are built for (`frames` as `view` serves them); they
    are checked against the data once it is loaded."""

    def __init__(
        self,
        source: VideoSource,
        root: str = "data",
        batch_size: Annotated[int, Positive] = 32,
        eval_batch_size: Annotated[int, Positive] = 64,
        num_workers: Annotated[int, NonNegative] = 1,
        view: View = "clip",
        download: bool = False,
        num_classes: Annotated[int, Positive] = 13,
        frames: Annotated[int, Positive] = 8,
        channels: Annotated[int, Positive] = 1,
        image_size: Annotated[int, Positive] = 64,
    ):
        super().__init__()
        self.source = source
        self.root = Path(root)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.view = view
        self.download = download
        self.num_classes = num_classes
        self.frames = frames
        self.channels = channels
        self.image_size = image_size
        self.classes: list[str] = []
        self.splits: dict[str, Dataset] = {}

    def prepare_data(self) -> None:
        self.source.prepare(self.root, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        parts = self.source.load(self.root, self.download)
        self.classes = list(self.source.classes)
        self._check(parts["train"])
        self.splits = {split: ClipSamples(parts[split], self.view, order_seed=SPLITS.index(split)) for split in SPLITS}

    def _check(self, part: LabelledClips) -> None:
        frames, channels, height, width = part.clips.shape[1:]
        served = 1 if self.view == "single_frame" else frames
        found = {"num_classes": len(self.classes), "frames": served, "channels": channels, "image_size": height}
        stated = {key: getattr(self, key) for key in found}
        wrong = [
            f"data.{key} is {stated[key]} but {self.source.name} has {found[key]}"
            for key in found
            if found[key] != stated[key]
        ]
        if height != width:
            wrong.append(f"{self.source.name}'s frames are {width}x{height}; the models take square frames")
        if wrong:
            raise DataError("; ".join(wrong) + f" (view={self.view})")

    def loader(self, dataset: Dataset, batch_size: int, shuffle: bool, rank: int, world_size: int) -> DataLoader:
        on_gpu = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return sample_loader(dataset, batch_size, shuffle, self.num_workers, on_gpu, rank=rank, world_size=world_size)
