"""Moving Fashion-MNIST: clips of real Fashion-MNIST objects labelled by how they move, for video
classification offline.

Each clip holds `frames` 64x64 greyscale frames of one or two Fashion-MNIST images (rotated, scaled and
placed at random) that all make the clip's motion: one of eight translation directions, a rotation
clockwise or anticlockwise, a zoom in or out, or none (13 classes, `CLASSES`). The speed of each motion is
drawn per clip. No single frame tells the classes apart: every object's state (place, angle, size) at the
anchor frame `frames // 2` is drawn from the same distribution whatever the class, and the motion runs
from there backwards and forwards, so the anchor frame alone carries nothing of the class.

The clips are written once into `root/moving_fashion_mnist/` (`MovingFashionMNIST.directory`) in
torchvision's `MovingMNIST` array layout, with the labels beside them:
  <split>.npy          uint8 (N, frames, 1, 64, 64)
  <split>_labels.npy   int64 (N,) class ids, `CLASSES[id]` naming them
  meta.json            the settings they were made with, and the class names
Train and val clips take their objects from disjoint parts of Fashion-MNIST's training images, test
clips from its test images. Everything follows from `seed`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Annotated, NamedTuple

import numpy as np
import torch

from dlforge.constraints import Positive
from dlforge.data.files import made_with, prepare_once, reading, staged_dir
from dlforge.data.sources.images import TorchvisionImages
from dlforge.data.sources.scenes import object_sources
from dlforge.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SIZE = 64
OBJECT_SIDE = 28  # Fashion-MNIST's images
DIRECTIONS = ("right", "down-right", "down", "down-left", "left", "up-left", "up", "up-right")  # 45° apart
CLASSES = (
    *(f"move {direction}" for direction in DIRECTIONS),
    "rotate clockwise",
    "rotate anticlockwise",
    "zoom in",
    "zoom out",
    "static",
)
# Per object, at the anchor frame: its centre (pixels, both axes), angle (any) and scale of its 28 pixels.
CENTRE = (18.0, 46.0)
SCALE = (0.8, 1.1)
# Per frame, drawn per clip: translation (pixels), rotation (degrees), zoom (factor).
SPEED = (2.0, 3.0)
TURN = (10.0, 20.0)
ZOOM = (1.05, 1.09)
DEFAULT_COUNTS = {"train": 6000, "val": 1000, "test": 2000}
VERSION = 1  # of the generator: a change to what it draws makes clips anew


class LabelledClips(NamedTuple):
    clips: np.ndarray  # uint8 (N, frames, channels, height, width), memory-mapped: read rows as needed
    labels: torch.Tensor  # int64 (N,)


class MovingFashionMNIST:
    """The generated clips; `fashion_mnist` is the source of their objects (its files: Debian's
    dataset-fashion-mnist, or a download with data.download=true). Clip counts, frames or a seed other than
    the defaults are written beside the default set, never over it."""

    name = "moving_fashion_mnist"
    needs_download = True  # made from Fashion-MNIST's files, which no Python package ships: not in `all=true`
    classes = list(CLASSES)

    def __init__(
        self,
        fashion_mnist: TorchvisionImages,
        frames: Annotated[int, Positive] = 8,
        train: Annotated[int, Positive] = DEFAULT_COUNTS["train"],
        val: Annotated[int, Positive] = DEFAULT_COUNTS["val"],
        test: Annotated[int, Positive] = DEFAULT_COUNTS["test"],
        seed: int = 0,
    ):
        self.fashion_mnist = fashion_mnist
        self.frames = frames
        self.counts = {"train": train, "val": val, "test": test}
        self.seed = seed

    def directory(self, root: Path) -> Path:
        name = self.name
        if self.counts != DEFAULT_COUNTS:
            name += "".join(f"-{split}{count}" for split, count in self.counts.items())
        if self.frames != 8:
            name += f"-frames{self.frames}"
        if self.seed:
            name += f"-seed{self.seed}"
        return Path(root) / name

    def settings(self) -> dict:
        return {"version": VERSION, "seed": self.seed, "counts": self.counts, "frames": self.frames, "size": SIZE}

    def prepare(self, root: Path, download: bool) -> None:
        """Write the clips, unless clips made with the same settings are there."""
        directory = self.directory(root)
        prepare_once(
            directory, lambda: made_with(directory, self.settings()), lambda: self._write(root, directory, download)
        )

    def load(self, root: Path, download: bool) -> dict[str, LabelledClips]:
        self.prepare(root, download)
        directory = self.directory(root)
        splits = {}
        for split in SPLITS:
            clips_path, labels_path = directory / f"{split}.npy", directory / f"{split}_labels.npy"
            with reading(clips_path):
                clips = np.load(clips_path, mmap_mode="r")
            with reading(labels_path):
                labels = torch.from_numpy(np.load(labels_path)).long()
            if len(clips) != len(labels) or clips.shape[1:] != (self.frames, 1, SIZE, SIZE):
                raise DataError(
                    f"{clips_path} holds clips of shape {clips.shape} for {len(labels)} labels in {labels_path}; "
                    f"expected ({len(labels)}, {self.frames}, 1, {SIZE}, {SIZE}): delete {directory} to make it anew"
                )
            splits[split] = LabelledClips(clips, labels)
        return splits

    def _write(self, root: Path, directory: Path, download: bool) -> None:
        started = time.perf_counter()
        objects = {split: images for split, (images, *_) in object_sources(self.fashion_mnist, root, download).items()}
        with staged_dir(directory) as staged:
            for split in SPLITS:
                rng = np.random.default_rng([self.seed, SPLITS.index(split)])
                clips, labels = make_clips(objects[split], self.counts[split], self.frames, rng)
                np.save(staged / f"{split}.npy", clips)
                np.save(staged / f"{split}_labels.npy", labels)
            meta = {"settings": self.settings(), "classes": list(CLASSES)}
            (staged / "meta.json").write_text(json.dumps(meta, indent=2))
        log.info(f"{sum(self.counts.values())} clips written to {directory} in {time.perf_counter() - started:.0f} s")


def make_clips(
    images: np.ndarray, count: int, frames: int, rng: np.random.Generator, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """`count` clips (uint8 (count, frames, 1, SIZE, SIZE)) of objects from `images` (N, 28, 28), and their
    labels (int64), drawn from `rng`: classes in equal shares, shuffled. Made `chunk` clips at a time."""
    labels = rng.permutation(np.arange(count) % len(CLASSES))
    clips = np.empty((count, frames, 1, SIZE, SIZE), dtype=np.uint8)
    for start in range(0, count, chunk):
        clips[start : start + chunk, :, 0] = _draw(images, labels[start : start + chunk], frames, rng)
    return clips, labels.astype(np.int64)


def _draw(images: np.ndarray, labels: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    """A clip of one or two objects per label: uint8 (count, frames, SIZE, SIZE)."""
    count = len(labels)
    objects = np.where(rng.random(count) < 0.5, 1, 2)
    step = np.arange(frames) - frames // 2  # frames from the anchor, which every class's draw is centred on
    canvas = torch.zeros(count, frames, SIZE, SIZE)
    for slot in range(2):  # the clip's first object, then its second where it has one
        centre = rng.uniform(*CENTRE, size=(count, 2))
        angle = rng.uniform(0, 2 * math.pi, size=count)
        scale = rng.uniform(*SCALE, size=count)
        velocity, turn, zoom = _motions(labels, rng)
        centres = centre[:, None] + step[None, :, None] * velocity[:, None]  # (count, frames, 2)
        angles = angle[:, None] + step * turn[:, None]
        scales = scale[:, None] * zoom[:, None] ** step
        picked = torch.from_numpy(images[rng.integers(len(images), size=count)]).float()
        rendered = _render(picked, centres, angles, scales)
        present = torch.from_numpy(objects > slot)[:, None, None, None]
        canvas = torch.where(present, torch.maximum(canvas, rendered), canvas)
    return canvas.round().clamp(0, 255).to(torch.uint8).numpy()


def _motions(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per clip: velocity (pixels per frame, x right and y down), turn (radians per frame, clockwise on
    screen positive) and zoom (factor per frame), from its class and a speed drawn for it."""
    count = len(labels)
    speed, turn, zoom = rng.uniform(*SPEED, count), np.radians(rng.uniform(*TURN, count)), rng.uniform(*ZOOM, count)
    moving = labels < len(DIRECTIONS)
    heading = labels * math.pi / 4  # 0: right, pi / 2: down (y points down)
    velocity = np.where(moving[:, None], speed[:, None] * np.stack([np.cos(heading), np.sin(heading)], 1), 0.0)
    turns = {CLASSES.index("rotate clockwise"): 1.0, CLASSES.index("rotate anticlockwise"): -1.0}
    zooms = {CLASSES.index("zoom in"): 1.0, CLASSES.index("zoom out"): -1.0}
    turn_sign = np.vectorize(lambda label: turns.get(label, 0.0))(labels)
    zoom_sign = np.vectorize(lambda label: zooms.get(label, 0.0))(labels)
    return velocity, turn_sign * turn, zoom**zoom_sign


def _render(images: torch.Tensor, centres: np.ndarray, angles: np.ndarray, scales: np.ndarray) -> torch.Tensor:
    """Each image (count, 28, 28) drawn on an empty SIZE x SIZE canvas in every frame, its centre at
    `centres` (count, frames, 2) pixels, rotated clockwise by `angles` and scaled by `scales` (count, frames),
    bilinear: (count, frames, SIZE, SIZE)."""
    import torch.nn.functional as F

    count, frames = angles.shape
    # grid_sample maps each canvas point p (in [-1, 1]) to the image point R(-angle) (SIZE/2 (p + 1) - centre)
    # / (scale 28/2), where R(a) turns clockwise on screen (y points down)
    cos, sin = torch.from_numpy(np.cos(angles)).float(), torch.from_numpy(np.sin(angles)).float()
    unturn = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # R(-angle)
    factor = torch.from_numpy(SIZE / OBJECT_SIDE / scales).float()[..., None, None]
    linear = unturn * factor
    offset = (1 - torch.from_numpy(centres).float() * 2 / SIZE)[..., None]  # (count, frames, 2, 1)
    theta = torch.cat([linear, linear @ offset], -1).flatten(0, 1)  # (count * frames, 2, 3)
    grid = F.affine_grid(theta, [count * frames, 1, SIZE, SIZE], align_corners=False)
    sources = images[:, None].expand(count, frames, OBJECT_SIDE, OBJECT_SIDE).reshape(-1, 1, OBJECT_SIDE, OBJECT_SIDE)
    return F.grid_sample(sources, grid, align_corners=False).view(count, frames, SIZE, SIZE)
