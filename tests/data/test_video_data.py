"""Video data: moving Fashion-MNIST clips (their motions, files and splits), the views the honesty
baselines see, and real videos decoded with PyAV: the playback-speed clips and the UCF101 and Kinetics
layouts, on tiny videos encoded here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dlforge.data.sources.images import TorchvisionImages
from dlforge.data.sources.moving import CLASSES, SIZE, MovingFashionMNIST, make_clips
from dlforge.data.sources.videos import UCF101, Kinetics, PlaybackSpeed
from dlforge.data.video import VideoClassificationData
from dlforge.errors import DataError

PACKAGE_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist (.ci/run installs it)
COUNTS = {"train": 26, "val": 13, "test": 13}


def moving(frames: int = 8) -> MovingFashionMNIST:
    return MovingFashionMNIST(TorchvisionImages("fashion_mnist", package_dir=str(PACKAGE_DIR)), frames, **COUNTS)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A data dir holding Fashion-MNIST (from the package) and a few clips."""
    if not PACKAGE_DIR.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
    root = tmp_path_factory.mktemp("data")
    moving().prepare(root, download=False)
    return root


# --- moving Fashion-MNIST ----------------------------------------------------------------------------------


def centroids_and_mass(clip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame of a (frames, SIZE, SIZE) clip: the intensity centroid (x, y) and the total intensity."""
    frames = clip.astype(np.float64)
    mass = frames.sum(axis=(1, 2))
    rows, cols = np.mgrid[:SIZE, :SIZE]
    return np.stack([(frames * cols).sum((1, 2)), (frames * rows).sum((1, 2))], 1) / mass[:, None], mass


def test_clips_move_as_their_labels_say():
    bar = np.zeros((1, 28, 28), dtype=np.uint8)
    bar[0, 4:24, 10:18] = 255  # one object, fully inside the frame wherever it goes
    clips, labels = make_clips(bar, 3 * len(CLASSES), 8, np.random.default_rng(0))
    assert np.bincount(labels).tolist() == [3] * len(CLASSES)
    for clip, label in zip(clips[:, :, 0], labels):
        centres, mass = centroids_and_mass(clip)
        shift = centres[-1] - centres[0]
        name = CLASSES[label]
        if name.startswith("move"):
            heading = np.degrees(np.arctan2(shift[1], shift[0])) % 360  # y points down
            assert abs((heading - 45 * label + 180) % 360 - 180) < 5 and np.hypot(*shift) > 10, (name, shift)
        else:
            assert np.hypot(*shift) < 1.5, (name, shift)  # turning or zooming about its own centre
        growth = mass[-1] / mass[0]  # area: the scale squared, 1.05-1.09 a frame over 7 frames
        expected = {"zoom in": (1.9, 3.5), "zoom out": (1 / 3.5, 1 / 1.9)}.get(
            name, (0.8, 1.25)
        )  # resampling a turned bar
        assert expected[0] < growth < expected[1], (name, growth)


def test_clips_are_written_in_movingmnist_layout_the_same_every_time(root, tmp_path):
    directory = moving().directory(root)
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["classes"] == list(CLASSES)
    for split, count in COUNTS.items():
        clips, labels = np.load(directory / f"{split}.npy"), np.load(directory / f"{split}_labels.npy")
        assert clips.dtype == np.uint8 and clips.shape == (count, 8, 1, SIZE, SIZE)
        assert labels.dtype == np.int64 and labels.shape == (count,) and set(labels) <= set(range(len(CLASSES)))
    again = tmp_path / "again"
    again.mkdir()
    (again / "FashionMNIST").symlink_to(root / "FashionMNIST")
    moving().prepare(again, download=False)
    for name in ("train.npy", "test.npy", "test_labels.npy"):
        assert (directory / name).read_bytes() == (moving().directory(again) / name).read_bytes()


def test_test_clips_show_fashion_mnist_test_images_only(root, monkeypatch):
    """Swap Fashion-MNIST's test images for blank ones: the test clips go blank, the others do not."""
    source = moving()
    train, test = source.fashion_mnist.load(root, False)
    blank = test._replace(images=np.zeros_like(test.images))
    monkeypatch.setattr(TorchvisionImages, "load", lambda self, root, download: (train, blank))
    splits = MovingFashionMNIST(source.fashion_mnist, 8, **COUNTS, seed=1).load(root, download=False)
    assert not splits["test"].clips.any() and splits["train"].clips.any() and splits["val"].clips.any()


def datamodule(root: Path, view: str = "clip", **options) -> VideoClassificationData:
    frames = 1 if view == "single_frame" else 8
    data = VideoClassificationData(
        moving(), str(root), batch_size=4, num_workers=0, view=view, frames=frames, **options
    )
    data.setup("fit")
    return data


def test_views_serve_the_clip_its_frames_reordered_or_its_middle_frame(root):
    clip, label = datamodule(root).splits["test"][5]
    assert clip.shape == (8, 1, SIZE, SIZE) and clip.dtype == torch.float32 and 0 <= clip.min() <= clip.max() <= 1
    shuffled, shuffled_label = datamodule(root, "shuffled").splits["test"][5]
    assert shuffled_label == label and not torch.equal(shuffled, clip)
    order = [next(i for i in range(8) if torch.equal(frame, clip[i])) for frame in shuffled]
    assert sorted(order) == list(range(8))  # the same frames, in an order that is the same every time
    assert torch.equal(datamodule(root, "shuffled").splits["test"][5][0], shuffled)
    single, _ = datamodule(root, "single_frame").splits["test"][5]
    assert torch.equal(single, clip[4:5])


def test_batches_are_clips_and_labels(root):
    clips, labels = next(iter(datamodule(root).train_dataloader()))
    assert clips.shape == (4, 8, 1, SIZE, SIZE) and labels.dtype == torch.int64


def test_data_that_does_not_match_what_the_model_is_built_for_is_refused(root):
    with pytest.raises(DataError, match="data.num_classes is 10 but moving_fashion_mnist has 13"):
        datamodule(root, num_classes=10)


# --- real videos ---------------------------------------------------------------------------------------------


def encode(path: Path, frames: np.ndarray, fps: int = 10) -> Path:
    """A video of uint8 (frames, height, width, 3) RGB frames, MPEG-4 encoded by PyAV."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def moving_square(count: int, brightness: int = 255, size: int = 48) -> np.ndarray:
    """A bright square moving right one pixel per frame over a dark background, frame numbers as its row."""
    frames = np.zeros((count, size, size + 16, 3), dtype=np.uint8)
    for number in range(count):
        frames[number, 8:24, number % size : number % size + 8] = brightness
    return frames


def test_playback_speed_clips_are_split_in_time_and_labelled_by_stride(tmp_path):
    videos = [
        encode(tmp_path / "videos" / f"{name}.avi", moving_square(count)) for name, count in (("a", 150), ("b", 200))
    ]
    source = PlaybackSpeed([str(video) for video in videos], frames=4, size=16, hop=2)
    splits = source.load(tmp_path / "data", download=False)
    span = 4 * 3 + 1
    for split, (begin, end) in source.portions.items():
        cuts = splits[split].clips.cuts
        for video, count in ((0, 150), (1, 200)):
            first, last = cuts[cuts[:, 0] == video, 1].min(), (cuts[cuts[:, 0] == video, 1] + span - 1).max()
            assert first >= round(begin * count) and last < round(end * count), (split, video)
        assert splits[split].labels.tolist() == [source.strides.index(stride) for stride in cuts[:, 2]]
        starts = {stride: sorted(cuts[cuts[:, 2] == stride, :2].tolist()) for stride in source.strides}
        assert starts[1] == starts[2] == starts[4]  # every class's clips start at the same frames
    clip = splits["train"].clips[7]
    assert clip.shape == (4, 3, 16, 16) and clip.dtype == np.uint8
    assert (source.directory(tmp_path / "data") / "a.npy").is_file()


def ucf101_layout(root: Path) -> Path:
    """Two classes, groups 1-3 for training (3 is validation's) and 4 for testing; fold 1's lists."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    train, test = [], []
    for label, name in enumerate(("ApplyEyeMakeup", "Archery"), start=1):
        for group in (1, 2, 3, 4):
            file = f"{name}/v_{name}_g{group:02d}_c01.avi"
            encode(root / file, moving_square(6, brightness=100 + 100 * (label - 1)))
            (test if group == 4 else train).append(file)
    (lists / "trainlist01.txt").write_text("".join(f"{file} {1 + file.startswith('Archery')}\n" for file in train))
    (lists / "testlist01.txt").write_text("".join(f"{file}\n" for file in test))
    return root


def test_ucf101_layout_is_read_with_its_split_lists_and_a_group_held_out(tmp_path):
    root = ucf101_layout(tmp_path / "UCF101")
    source = UCF101(frames=4, size=16)
    splits = source.load(root, download=False)
    assert source.classes == ["ApplyEyeMakeup", "Archery"]
    names = {split: [path.name for path in part.clips.files] for split, part in splits.items()}
    assert names["val"] == ["v_ApplyEyeMakeup_g03_c01.avi", "v_Archery_g03_c01.avi"]
    assert len(names["train"]) == 4 and all("_g04_" in name for name in names["test"])
    assert splits["test"].labels.tolist() == [0, 1]
    clip = splits["test"].clips[1]
    assert clip.shape == (4, 3, 16, 16) and clip.dtype == np.uint8
    assert clip.max() > 150 and splits["test"].clips[0].max() < 150  # each file's own pixels


def test_kinetics_layout_is_read_per_split_and_class(tmp_path):
    root = tmp_path / "kinetics"
    for split, count in (("train", 10), ("val", 2)):
        for name in ("abseiling", "air drumming"):
            for number in range(count):
                encode(root / split / name / f"{number:03d}.mp4", moving_square(5))
    source = Kinetics(frames=3, size=8)
    splits = source.load(root, download=False)
    assert source.classes == ["abseiling", "air drumming"]
    assert [len(splits[split].labels) for split in ("train", "val", "test")] == [18, 2, 4]
    assert splits["test"].labels.tolist() == [0, 0, 1, 1]
    assert splits["val"].clips[0].shape == (3, 3, 8, 8)


def test_a_corrupt_video_stops_with_one_line_naming_it(tmp_path):
    root = ucf101_layout(tmp_path / "UCF101")
    broken = root / "Archery" / "v_Archery_g04_c01.avi"
    broken.write_bytes(broken.read_bytes()[:200])  # cut short
    clips = UCF101(frames=4, size=16).load(root, download=False)["test"].clips
    with pytest.raises(DataError) as raised:
        clips[1]
    assert str(broken) in str(raised.value) and "\n" not in str(raised.value)
