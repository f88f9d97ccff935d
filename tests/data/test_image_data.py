"""Data: stratified splits, in-memory batching, augmentation, and the torchvision loaders on files made
here in the datasets' own on-disk formats (no download)."""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dlforge.data.image import ImageClassificationData
from dlforge.data.sharding import check_split
from dlforge.data.sources.images import Digits, TorchvisionImages
from dlforge.data.tensors import (
    TensorBatches,
    batch_loader,
    random_hflip,
    random_shift,
    sample_loader,
    stratified_split,
)
from dlforge.errors import ConfigError, DataError


def test_stratified_split_is_disjoint_stratified_and_seeded():
    labels = torch.arange(10).repeat_interleave(50)
    kept, held_out = stratified_split(labels, 0.2, seed=3)
    assert len(set(kept.tolist()) & set(held_out.tolist())) == 0
    assert len(kept) + len(held_out) == len(labels)
    assert torch.bincount(labels[held_out]).tolist() == [10] * 10
    again_kept, again_held_out = stratified_split(labels, 0.2, seed=3)
    assert torch.equal(held_out, again_held_out) and torch.equal(kept, again_kept)
    assert not torch.equal(held_out, stratified_split(labels, 0.2, seed=4)[1])


def test_digits_splits_are_fixed_normalised_and_batched():
    data = ImageClassificationData(Digits(), batch_size=32)
    data.setup("fit")
    sizes = {name: len(split) for name, split in data.splits.items()}
    assert sizes == {"train": 1295, "val": 143, "test": 359}
    train_images = data.splits["train"].tensors[0]
    assert train_images.shape[1:] == (1, 8, 8) and train_images.dtype == torch.float32
    assert abs(train_images.mean().item()) < 1e-4 and abs(train_images.std().item() - 1) < 1e-2
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (32, 1, 8, 8) and labels.shape == (32,)
    # plain strides: a stride of 1 on the channel dim reads as channels-last and changes the CNN's numbers
    assert images.stride() == torch.empty(images.shape).stride()
    other = ImageClassificationData(Digits(), batch_size=32)
    other.setup("test")
    assert torch.equal(other.splits["test"].tensors[0], data.splits["test"].tensors[0])


def test_batches_are_sliced_whole_and_cover_the_data_once():
    dataset = TensorBatches(torch.arange(100).float(), torch.arange(100))
    seen = torch.cat([labels for _, labels in batch_loader(dataset, batch_size=32, shuffle=True)])
    assert sorted(seen.tolist()) == list(range(100))
    with pytest.raises(ValueError, match="first dimension"):
        TensorBatches(torch.zeros(3), torch.zeros(4))


def _digits(**options) -> ImageClassificationData:
    data = ImageClassificationData(Digits(), batch_size=100, eval_batch_size=100, **options)
    data.setup("fit")
    return data


@pytest.mark.parametrize("num_workers", [0, 2])
def test_per_sample_loading_gives_the_in_memory_batches(num_workers):
    in_memory, per_sample = _digits(), _digits(loading="samples", num_workers=num_workers)
    assert isinstance(in_memory.splits["train"], TensorBatches) and not isinstance(
        per_sample.splits["train"], TensorBatches
    )
    for method in ("train_dataloader", "val_dataloader", "test_dataloader"):
        torch.manual_seed(3)
        expected = list(getattr(in_memory, method)())
        torch.manual_seed(3)
        batches = list(getattr(per_sample, method)())
        assert len(batches) == len(expected) > 1
        for (images, labels), (expected_images, expected_labels) in zip(batches, expected):
            assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


def _rank(data: ImageClassificationData, rank: int, world_size: int) -> ImageClassificationData:
    """`data` as the DDP process `rank` of `world_size` sees it (what its loaders read of the trainer)."""
    data.trainer = SimpleNamespace(
        global_rank=rank, world_size=world_size, strategy=SimpleNamespace(root_device=torch.device("cpu"))
    )
    return data


@pytest.mark.parametrize("loading", ["memory", "samples"])
def test_ddp_ranks_share_every_batch_and_evaluate_each_sample_once(loading):
    """Batch sizes are global: 2 processes take halves of the batches 1 process takes (data.batch_size=100)."""
    one, ranks = _digits(loading=loading), [_rank(_digits(loading=loading), rank, 2) for rank in (0, 1)]
    torch.manual_seed(3)
    expected = list(one.train_dataloader())
    torch.manual_seed(3)
    shares = [list(data.train_dataloader()) for data in ranks]
    assert len(expected) == len(shares[0]) == len(shares[1]) == 13  # 1295 images
    # all but the last batch (1295 is odd: the sampler pads the last with a repeat of the epoch's first image)
    for (images, labels), *halves in list(zip(expected, *shares))[:-1]:
        for rank, (rank_images, rank_labels) in enumerate(halves):
            assert torch.equal(rank_images, images[rank::2]) and torch.equal(rank_labels, labels[rank::2])
    for method in ("val_dataloader", "test_dataloader"):
        labels = torch.cat([labels for _, labels in getattr(one, method)()])
        for rank, data in enumerate(ranks):  # every sample once, over the ranks
            assert torch.equal(torch.cat([labels for _, labels in getattr(data, method)()]), labels[rank::2])


def test_a_ddp_rank_resumes_mid_epoch_with_its_share_of_the_batches():
    dataset = TensorBatches(torch.arange(100).float(), torch.arange(100))

    def epoch_loader(state=None):
        loader = batch_loader(dataset, 8, shuffle=True, rank=1, world_size=2)
        if state is not None:
            loader.load_state_dict(state)
        loader.sampler.set_epoch(1)
        return loader

    torch.manual_seed(0)
    expected = [labels for _, labels in epoch_loader()]
    assert len(expected) == 7 and sum(map(len, expected)) == 50  # this rank's half of the 100
    interrupted = epoch_loader()
    batches = iter(interrupted)
    seen = [next(batches)[1] for _ in range(3)]
    seen += [labels for _, labels in epoch_loader(interrupted.state_dict())]
    assert len(seen) == len(expected) and all(torch.equal(a, b) for a, b in zip(seen, expected))


def test_a_batch_size_that_does_not_split_over_the_processes_is_refused():
    data = _rank(ImageClassificationData(Digits(), batch_size=99), 0, 2)
    data.setup("fit")
    message = "data.batch_size=99 does not split evenly over 2 processes"
    with pytest.raises(ConfigError, match=message):
        check_split(data, 2)
    with pytest.raises(ConfigError, match=message):
        data.train_dataloader()
    check_split(data, 1)


def test_per_sample_loader_with_workers_resumes_mid_epoch_with_the_same_batches():
    dataset = _digits(loading="samples").splits["train"]  # 1295 images: 11 batches of 128

    def epoch_loader():
        loader = sample_loader(dataset, 128, shuffle=True, num_workers=2, pin_memory=False)
        loader.sampler.set_epoch(2)
        return loader

    torch.manual_seed(0)
    expected = [labels for _, labels in epoch_loader()]
    interrupted = epoch_loader()
    batches = iter(interrupted)
    seen = [next(batches)[1] for _ in range(3)]  # the workers have fetched further than this
    state = interrupted.state_dict()
    assert state == {"epoch": 2, "position": 3 * 128}
    resumed = sample_loader(dataset, 128, shuffle=True, num_workers=2, pin_memory=False)
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)
    seen += [labels for _, labels in resumed]
    assert len(seen) == len(expected) == 11 and all(torch.equal(a, b) for a, b in zip(seen, expected))
    resumed.sampler.set_epoch(3)  # the next epoch starts from its beginning, in a new order
    assert len(list(resumed)) == 11 and not torch.equal(next(iter(resumed))[1], expected[0])


def test_shift_moves_whole_pixels_and_flip_mirrors():
    images = torch.rand(64, 3, 8, 8)
    shifted = random_shift(images, max_pixels=1)
    centre_matches = [
        any(
            torch.equal(shifted[i, :, 2:6, 2:6], images[i, :, 2 + dy : 6 + dy, 2 + dx : 6 + dx])
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        )
        for i in range(64)
    ]
    assert all(centre_matches)
    assert not torch.equal(shifted, images)
    flipped = random_hflip(images)
    assert all(torch.equal(f, i) or torch.equal(f, i.flip(-1)) for f, i in zip(flipped, images))


def test_declared_shape_is_checked_against_the_data():
    data = ImageClassificationData(Digits(), num_classes=12)
    with pytest.raises(DataError, match="data.num_classes is 12 but digits has 10"):
        data.setup("fit")


# --- torchvision datasets, from files written here in their published formats ---------------------


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format of MNIST's files: magic (0, 0, dtype 0x08 = uint8, ndim), big-endian dims, data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _fake_images(count: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 10
    images = rng.integers(0, 256, size=(count, *shape), dtype=np.uint8)
    return images, labels


@pytest.mark.parametrize("source,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_family_reads_its_idx_files(source, folder, tmp_path: Path):
    raw = tmp_path / folder / "raw"
    for prefix, count in (("train", 200), ("t10k", 50)):
        images, labels = _fake_images(count, (28, 28), seed=count)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    data = ImageClassificationData(TorchvisionImages(source), root=str(tmp_path), image_size=28, val_fraction=0.1)
    data.setup("fit")
    assert {name: len(split) for name, split in data.splits.items()} == {"train": 180, "val": 20, "test": 50}
    test_images, test_labels = data.splits["test"].tensors
    assert test_images.shape == (50, 1, 28, 28)
    assert test_labels.tolist() == (np.arange(50) % 10).tolist()
    expected_first = _fake_images(50, (28, 28), seed=50)[0][0]
    train_raw = _fake_images(200, (28, 28), seed=200)[0]
    mean, std = train_raw.mean() / 255, train_raw.std() / 255  # close to the train split's statistics
    assert np.allclose(test_images[0, 0].numpy() * std + mean, expected_first / 255, atol=0.02)


def test_cifar10_reads_its_pickled_batches(tmp_path: Path, monkeypatch):
    from torchvision.datasets import CIFAR10

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    md5 = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for index, name in enumerate(names):
        images, labels = _fake_images(40, (3, 32, 32), seed=index)
        (folder / name).write_bytes(pickle.dumps({"data": images.reshape(40, -1), "labels": labels.tolist()}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))
    for path in folder.iterdir():
        md5[path.name] = hashlib.md5(path.read_bytes()).hexdigest()
    # The real integrity check runs, against the checksums of these files instead of the published ones.
    monkeypatch.setattr(CIFAR10, "train_list", [[name, md5[name]] for name in names[:5]])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})

    data = ImageClassificationData(TorchvisionImages("cifar10"), root=str(tmp_path), channels=3, image_size=32)
    data.setup("fit")
    assert {name: len(split) for name, split in data.splits.items()} == {"train": 180, "val": 20, "test": 40}
    assert data.splits["test"].tensors[0].shape == (40, 3, 32, 32)

    (folder / "test_batch").write_bytes(b"corrupted")
    with pytest.raises(DataError, match="cifar10 not found or corrupted"):
        ImageClassificationData(TorchvisionImages("cifar10"), root=str(tmp_path), channels=3, image_size=32).setup(
            "fit"
        )


def test_missing_torchvision_data_names_the_fix(tmp_path: Path):
    with pytest.raises(DataError, match="set data.download=true"):
        ImageClassificationData(TorchvisionImages("mnist"), root=str(tmp_path), image_size=28).setup("fit")
