"""Real videos, decoded with PyAV (its wheel carries its own FFmpeg).

PlaybackSpeed: the three real videos of Debian's opencv-doc (vtest.avi: pedestrians, Megamind.avi: a film
  scene, tree.avi: a tree in the wind), cut into clips whose frames are every 1st, 2nd or 4th frame of
  the video (3 classes: how fast the clip plays). Split in time: the first 60 % of each video's frames
  train, the next 10 % validate, the last 30 % test, so no test clip shares a frame with a training clip.
  The videos are decoded once into `root/playback_speed/<video>.npy` (uint8 (frames, 3, size, size)).
UCF101, Kinetics: the published folder layouts, each video decoded when a run reads it (in the loader
  workers): `frames` frames spread evenly over the video, centre-cropped to a square, resized.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
import torch

from dlforge.constraints import Positive
from dlforge.data.files import prepare_once, reading, staged_dir
from dlforge.data.sources.moving import LabelledClips
from dlforge.errors import DataError, some
from dlforge.files import replacing

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def decode(path: Path, size: int, keep: Sequence[int] | None = None) -> np.ndarray:
    """The frames of the video at `path` (all, or those numbered in `keep`, in the video's order), each
    centre-cropped to a square and resized to `size` pixels: uint8 (frames, 3, size, size). A file PyAV
    cannot decode, or without the frames asked for: one DataError naming it."""
    import av
    from PIL import Image

    wanted = None if keep is None else set(keep)
    frames = []
    with reading(path), av.open(str(path)) as container:
        for number, frame in enumerate(container.decode(video=0)):
            if wanted is not None and number not in wanted:
                continue
            image = frame.to_image()  # RGB
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            square = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
            frames.append(np.asarray(square).transpose(2, 0, 1))
    if not frames or (wanted is not None and len(frames) < len(wanted)):
        raise DataError(f"{path} has {len(frames)} decodable frames, fewer than the {len(wanted or [1])} needed")
    return np.stack(frames)


class StridedClips:
    """Clips cut from whole decoded videos: clip i is `frames` frames of video `video[i]` from `start[i]` on,
    `stride[i]` apart. Indexed one clip at a time, as a (N, frames, 3, size, size) array would be."""

    def __init__(self, videos: list[np.ndarray], cuts: np.ndarray, frames: int):
        self.videos, self.cuts, self.frames = videos, cuts, frames  # cuts: (N, 3) video, start, stride
        self.shape = (len(cuts), frames, *videos[0].shape[1:])

    def __len__(self) -> int:
        return len(self.cuts)

    def __getitem__(self, index: int) -> np.ndarray:
        video, start, stride = (int(value) for value in self.cuts[index])
        return self.videos[video][start : start + stride * (self.frames - 1) + 1 : stride]


class PlaybackSpeed:
    """Clips of opencv-doc's videos labelled by their frame stride (`STRIDES`). Clips of every stride start at
    the same frames (`hop` apart; every frame in training), so where a clip starts tells nothing of its
    class; each split's clips lie within its part of the video whatever their stride."""

    name = "playback_speed"
    needs_download = True  # read from Debian's opencv-doc, which no Python package ships: not in `all=true`
    strides = (1, 2, 4)
    classes = [f"every {stride} frame{'s' if stride > 1 else ''}" for stride in strides]
    portions = {"train": (0.0, 0.6), "val": (0.6, 0.7), "test": (0.7, 1.0)}  # of each video's frames

    def __init__(
        self,
        videos: list[str],
        frames: Annotated[int, Positive] = 8,
        size: Annotated[int, Positive] = 64,
        hop: Annotated[int, Positive] = 4,
    ):
        self.videos = [Path(video) for video in videos]
        self.frames, self.size, self.hop = frames, size, hop

    def directory(self, root: Path) -> Path:
        return Path(root) / f"{self.name}-{self.size}"

    def prepare(self, root: Path, download: bool) -> None:
        """Decode the videos, unless they are there decoded."""
        directory = self.directory(root)
        prepare_once(directory, lambda: self._made(directory), lambda: self._write(directory))

    def _write(self, directory: Path) -> None:
        missing = [str(video) for video in self.videos if not video.is_file()]
        if missing:
            raise DataError(
                f"videos not found: {some(missing)}; `apt-get install opencv-doc` installs these sample videos (Debian)"
            )
        with staged_dir(directory) as staged:
            for video in self.videos:
                with replacing(staged / f"{video.stem}.npy") as file:
                    np.save(file, decode(video, self.size))
            (staged / "meta.json").write_text(json.dumps({"videos": [str(video) for video in self.videos]}))
        log.info(f"{len(self.videos)} videos decoded into {directory}")

    def _made(self, directory: Path) -> bool:
        path = directory / "meta.json"
        if not path.is_file():
            return False
        with reading(path):
            return json.loads(path.read_text())["videos"] == [str(video) for video in self.videos]

    def load(self, root: Path, download: bool) -> dict[str, LabelledClips]:
        self.prepare(root, download)
        directory = self.directory(root)
        videos = []
        for video in self.videos:
            path = directory / f"{video.stem}.npy"
            with reading(path):
                videos.append(np.load(path, mmap_mode="r"))
        span = max(self.strides) * (self.frames - 1) + 1  # source frames the slowest clip covers
        splits = {}
        for split, (begin, end) in self.portions.items():
            hop = 1 if split == "train" else self.hop
            cuts = [
                (number, start, stride)
                for number, frames in enumerate(videos)
                for start in range(round(begin * len(frames)), round(end * len(frames)) - span + 1, hop)
                for stride in self.strides
            ]
            if not cuts:
                raise DataError(f"the {split} part of these videos is shorter than a clip ({span} frames)")
            cuts = np.array(cuts)
            labels = torch.as_tensor([self.strides.index(stride) for stride in cuts[:, 2]])
            splits[split] = LabelledClips(StridedClips(videos, cuts, self.frames), labels)
        return splits


class VideoFiles:
    """Video files, each decoded when indexed into `frames` frames spread evenly over it (frame numbers read
    from the container's frame count, else counted by decoding), as a (N, frames, 3, size, size) array."""

    def __init__(self, files: list[Path], frames: int, size: int):
        self.files, self.frames = files, frames
        self.shape = (len(files), frames, 3, size, size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> np.ndarray:
        import av

        path = self.files[index]
        with reading(path), av.open(str(path)) as container:
            total = container.streams.video[0].frames or sum(1 for _ in container.decode(video=0))
        keep = np.linspace(0, max(total - 1, 0), self.frames).round().astype(int)
        clip = decode(path, self.shape[-1], keep)
        return clip[np.searchsorted(np.unique(keep), keep)]  # repeated numbers (short videos) repeat the frame


class VideoFolders:
    """What UCF101 and Kinetics share: labelled video files per split under the data's `root`, decoded when
    read. `classes` is known once `load` has read the layout."""

    needs_download = True  # the files are yours to bring
    name: str

    def __init__(self, frames: int, size: int):
        self.frames, self.size = frames, size
        self.classes: list[str] = []

    def prepare(self, root: Path, download: bool) -> None:
        pass  # nothing to make: the files are read where they are

    def labelled(self, files: list[Path], labels: list[int]) -> LabelledClips:
        return LabelledClips(VideoFiles(files, self.frames, self.size), torch.as_tensor(labels, dtype=torch.int64))

    def dirs(self, directory: Path) -> list[str]:
        if not directory.is_dir():
            raise DataError(f"{self.name}: {directory} not found (data.root: the dataset's folder)")
        return sorted(path.name for path in directory.iterdir() if path.is_dir())


class UCF101(VideoFolders):
    """UCF101 as published: `root/<Class>/v_<Class>_g<group>_c<clip>.avi` and the split lists in
    `root/ucfTrainTestlist/` (classInd.txt: "1 ApplyEyeMakeup"; trainlist0<fold>.txt: "<Class>/<file> 1";
    testlist0<fold>.txt: "<Class>/<file>"). Validation holds out each class's last group (actor) of the
    training list, as groups share actors and scenes."""

    name = "ucf101"

    def __init__(
        self,
        fold: Annotated[int, Positive] = 1,
        frames: Annotated[int, Positive] = 8,
        size: Annotated[int, Positive] = 64,
    ):
        super().__init__(frames, size)
        self.fold = fold

    def load(self, root: Path, download: bool) -> dict[str, LabelledClips]:
        lists = Path(root) / "ucfTrainTestlist"
        self.classes = self._classes(lists / "classInd.txt")
        train, test = (self._listed(root, lists / f"{kind}list{self.fold:02d}.txt") for kind in ("train", "test"))
        label = {name: number for number, name in enumerate(self.classes)}
        last_group: dict[str, str] = {}
        for file in train:
            last_group[file.parent.name] = max(last_group.get(file.parent.name, ""), _group(file))
        held_out = [_group(file) == last_group[file.parent.name] for file in train]
        parts = {
            "train": [file for file, out in zip(train, held_out) if not out],
            "val": [file for file, out in zip(train, held_out) if out],
            "test": test,
        }
        for files in parts.values():
            unknown = {file.parent.name for file in files} - set(label)
            if unknown:
                raise DataError(f"ucf101: classes listed but not in {lists / 'classInd.txt'}: {some(unknown)}")
        return {
            split: self.labelled(files, [label[file.parent.name] for file in files]) for split, files in parts.items()
        }

    def _classes(self, path: Path) -> list[str]:
        if not path.is_file():
            raise DataError(f"ucf101: {path} not found (the split lists belong in <data.root>/ucfTrainTestlist/)")
        with reading(path):
            numbered = dict(line.split() for line in path.read_text().splitlines() if line.strip())
            return [numbered[number] for number in sorted(numbered, key=int)]

    def _listed(self, root: Path, path: Path) -> list[Path]:
        if not path.is_file():
            raise DataError(f"ucf101: {path} not found (fold {self.fold}'s split list)")
        with reading(path):
            files = [Path(root) / line.split()[0] for line in path.read_text().splitlines() if line.strip()]
        missing = [str(file) for file in files if not file.is_file()]
        if missing:
            raise DataError(f"ucf101: {path} lists videos that are missing: {some(missing)}")
        return files


def _group(file: Path) -> str:
    """UCF101's group (the actor and scene) of a video: `g08` of v_ApplyEyeMakeup_g08_c01.avi."""
    return file.stem.split("_")[-2]


class Kinetics(VideoFolders):
    """Kinetics in torchvision's layout: `root/<split>/<class>/<video>.mp4` for split train and val (and
    test, where you have its labels); classes are train's sorted dir names. Without a test dir, val is
    the test split and every tenth training video (of each class) validates."""

    name = "kinetics"

    def load(self, root: Path, download: bool) -> dict[str, LabelledClips]:
        root = Path(root)
        self.classes = self.dirs(root / "train")
        train, val = self._split(root / "train"), self._split(root / "val")
        if (root / "test").is_dir():
            splits = {"train": train, "val": val, "test": self._split(root / "test")}
        else:
            files, labels = train
            out = [index % 10 == 9 for index in range(len(files))]  # sorted by class: a tenth of each
            kept = lambda items, held: [item for item, flag in zip(items, out) if flag == held]  # noqa: E731
            splits = {
                "train": (kept(files, False), kept(labels, False)),
                "val": (kept(files, True), kept(labels, True)),
                "test": val,
            }
        return {split: self.labelled(*files_and_labels) for split, files_and_labels in splits.items()}

    def _split(self, directory: Path) -> tuple[list[Path], list[int]]:
        files, labels = [], []
        for name in self.dirs(directory):
            if name not in self.classes:
                raise DataError(f"kinetics: class {name!r} of {directory} has no training videos")
            found = sorted(path for path in (directory / name).iterdir() if path.is_file())
            files += found
            labels += [self.classes.index(name)] * len(found)
        if not files:
            raise DataError(f"kinetics: no videos under {directory}/<class>/")
        return files, labels
