"""Data larger than memory: image splits written as LitData shards and streamed back (`data.loading=shards`),
images read per sample from an ImageFolder, and the resume and errors of both."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from conftest import ROOT, assert_ok, identical, read_metrics, run_script, script_env, when_saved
from dlforge.data.image import ImageClassificationData
from dlforge.data.sources.images import Digits, ImageFolder
from dlforge.errors import DataError

SHARD_BYTES = 16384  # a dozen chunks for digits' 1295 training images


def _digits(root: Path, loading: str, **options) -> ImageClassificationData:
    data = ImageClassificationData(
        Digits(), root=str(root), loading=loading, batch_size=64, eval_batch_size=100, **options
    )
    data.prepare_data()
    data.setup("fit")
    return data


def _rows(images: torch.Tensor) -> list[bytes]:
    """Each image's float values as bytes: equal only if bit for bit equal."""
    return [image.numpy().tobytes() for image in images]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> ImageClassificationData:
    return _digits(tmp_path_factory.mktemp("data"), "shards", shard_bytes=SHARD_BYTES)


def test_shards_hold_each_split_as_in_memory_and_split_over_ranks(shards):
    in_memory = _digits(shards.root, "memory")
    assert len(list((shards.shards_dir / "train").glob("chunk-*.bin"))) > 5
    torch.manual_seed(0)
    for split, shuffle in (("train", True), ("val", False), ("test", False)):
        images, labels = in_memory.splits[split].tensors
        expected = sorted(zip(_rows(images), labels.tolist()))
        one, *ranks = (
            [batch for batch in shards.loader(shards.splits[split], batch_size, shuffle, rank, world_size)]
            for batch_size, rank, world_size in ((64, 0, 1), (32, 0, 2), (32, 1, 2))
        )
        read = lambda batches: [(row, label) for x, y in batches for row, label in zip(_rows(x), y.tolist())]  # noqa: E731
        assert sorted(read(one)) == expected  # the same samples, labels and normalised values, each once
        first, second = (read(batches) for batches in ranks)
        assert not set(first) & set(second) and set(first) | set(second) <= set(expected)  # disjoint
        if shuffle:  # training: each rank the same number of batches; fewer than 2 x 32 samples left out
            assert len(ranks[0]) == len(ranks[1]) and len(expected) - 64 < len(first) + len(second) <= len(expected)
        else:  # evaluation: every sample once over the ranks
            assert sorted(first + second) == expected


def test_training_order_is_shuffled_per_epoch_and_seeded(shards):
    def epochs(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        loader = shards.train_dataloader()
        return [torch.cat([labels for _, labels in loader]) for _ in range(2)]

    first, second = epochs(1)
    assert not torch.equal(first, second)  # a new order each epoch
    assert all(torch.equal(a, b) for a, b in zip(epochs(1), (first, second)))  # the same for the same seed
    assert len(set(first[:64].tolist())) == 10  # a batch holds every class, not one chunk's
    assert not torch.equal(epochs(2)[0], first)


def test_truncated_or_missing_shard_or_corrupt_index_is_one_error_naming_the_file(tmp_path):
    data = _digits(tmp_path, "shards", shard_bytes=SHARD_BYTES)
    chunk = sorted((data.shards_dir / "train").glob("chunk-*.bin"))[0]
    whole = chunk.read_bytes()
    chunk.write_bytes(whole[:100])
    with pytest.raises(DataError, match=f"{chunk} is 100 bytes where its index records {len(whole)}") as error:
        _digits(tmp_path, "shards")
    assert "\n" not in str(error.value)  # the CLI prints a DataError as `error: <message>`, one line, exit 2
    chunk.unlink()
    with pytest.raises(DataError, match=f"{chunk} is missing"):
        _digits(tmp_path, "shards")
    chunk.write_bytes(whole)
    index = data.shards_dir / "val" / "index.json"
    index.write_text("{not json")
    with pytest.raises(DataError, match=f"{index} is unreadable or corrupt"):
        _digits(tmp_path, "shards")
    index.unlink()
    with pytest.raises(DataError, match=f"{index} not found"):
        _digits(tmp_path, "shards")


def _image_folder(root: Path) -> Path:
    """scikit-learn's digits as PNG files in torchvision's ImageFolder layout, the test split its own dir."""
    from PIL import Image

    digits = load_digits()
    for row, (image, label) in enumerate(zip(digits.images.astype(np.uint8), digits.target)):
        split = "test" if row % 5 == 0 else "train"
        (root / split / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image * 15).save(root / split / str(label) / f"{row:04d}.png")
    return root


def test_image_folder_per_sample_gives_the_in_memory_batches(tmp_path):
    folder = _image_folder(tmp_path / "my_digits")
    source = ImageFolder(str(folder))
    train, test = source.load(tmp_path, download=False)
    digits = load_digits()
    assert train.images.shape == (1437, 1, 8, 8) and test.images.shape == (360, 1, 8, 8)
    test_rows = sorted(range(0, 1797, 5), key=lambda row: (digits.target[row], row))  # ImageFolder's order
    assert np.array_equal(test.images[np.arange(360)][:, 0], digits.images[test_rows].astype(np.uint8) * 15)
    assert test.labels.tolist() == digits.target[test_rows].tolist()

    def batches(loading: str, **options) -> list[tuple[torch.Tensor, torch.Tensor]]:
        data = ImageClassificationData(ImageFolder(str(folder)), loading=loading, batch_size=64, **options)
        data.setup("fit")
        torch.manual_seed(5)
        return [batch for method in ("train_dataloader", "test_dataloader") for batch in getattr(data, method)()]

    in_memory, per_sample = batches("memory"), batches("samples", num_workers=2)
    assert len(in_memory) == len(per_sample) == 21 + 1
    assert all(identical(a, b) for a, b in zip(in_memory, per_sample))


def test_missing_image_folder_or_bad_image_is_one_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=f"image folder {tmp_path / 'nowhere'} not found"):
        ImageFolder(str(tmp_path / "nowhere")).load(tmp_path, download=False)
    folder = _image_folder(tmp_path / "my_digits")
    bad = folder / "train" / "3" / "0003.png"
    bad.write_bytes(b"not a png")
    train, _ = ImageFolder(str(folder)).load(tmp_path, download=False)
    row = next(index for index, path in enumerate(train.images.files) if path == str(bad))
    with pytest.raises(DataError, match=f"{bad} is unreadable or corrupt"):
        train.images[row]


# One epoch of 21 steps from shards, with augmentation, dropout and a loader worker fetching ahead; a
# training-state checkpoint every 5 steps.
RUN = [
    "data.loading=shards",
    f"data.shard_bytes={SHARD_BYTES}",
    "data.num_workers=1",
    "data.augment=true",
    "model.net.dropout=0.1",
    "trainer.max_epochs=1",
    "callbacks.resume_checkpoints.every_n_steps=5",
    "logger=none",
]


def test_resume_from_shards_after_sigkill_mid_epoch_is_bit_exact(tmp_path):
    data_dir = tmp_path / "data"
    reference = tmp_path / "reference"
    assert_ok(run_script("train", *RUN, f"paths.data_dir={data_dir}", f"hydra.run.dir={reference}", log_dir=tmp_path))
    run_dir = tmp_path / "killed"
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "src" / "train.py"),
            *RUN,
            f"paths.data_dir={data_dir}",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        env=script_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    when_saved(process, run_dir / "checkpoints" / "step-00000005.ckpt")
    process.kill()
    assert process.wait() == -signal.SIGKILL

    assert_ok(run_script("train", f"resume={run_dir}", log_dir=tmp_path))
    resumed, uninterrupted = (
        torch.load(d / "checkpoints" / "last.ckpt", weights_only=True) for d in (run_dir, reference)
    )
    assert uninterrupted["global_step"] == 21
    for key in ("state_dict", "optimizer_states", "lr_schedulers", "global_step", "epoch"):
        assert identical(resumed[key], uninterrupted[key]), key
    without_time = lambda metrics: {k: v for k, v in metrics.items() if k != "fit seconds"}  # noqa: E731
    assert without_time(read_metrics(run_dir)) == without_time(read_metrics(reference))
