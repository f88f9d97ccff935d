"""Image splits written as shards and streamed back with LitData (`data.loading=shards`).

A split is a LitData dir: `index.json` and `chunk-*.bin` files of about `chunk_bytes` each, holding the
stored pixel values (uint8) and the label of each image, in a shuffled order (a chunk read in turn holds
every class). Reading streams whole chunks: LitData gives each DDP rank and each of its loader workers its
own chunks (equal sample counts per rank in training), shuffles the chunks' order and the samples within
them per epoch from (seed, epoch), and resumes mid-epoch from its loader's `state_dict`, which Lightning
saves in every checkpoint. Evaluation reads a split's samples by index in order instead (LitData's random
access), served like the per-sample path's, so every process gets its share however few chunks there are.
Batches are normalised in the loader workers as the other paths normalise them.

Why LitData rather than WebDataset: both stream shards from local disks or object stores, but LitData
shards over ranks and workers by itself with equal sample counts per rank (WebDataset leaves uneven shard
counts to the user, a DDP hang otherwise), and its loader saves and restores its position mid-epoch
(WebDataset has no resumable state); it is released by Lightning AI every few weeks. Its chunks are its
own binary format, not tar.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from dlforge.data.files import reading
from dlforge.errors import DataError

INDEX = "index.json"


def write_shards(directory: Path, samples: Iterable[tuple[np.ndarray, int]], chunk_bytes: int) -> int:
    """Write `samples` ((C, H, W) uint8 image, label) in order as a LitData dir; returns their number."""
    from litdata.streaming.writer import BinaryWriter

    directory.mkdir(parents=True, exist_ok=True)
    writer = BinaryWriter(str(directory), chunk_bytes=chunk_bytes)
    count = 0
    for count, (image, label) in enumerate(samples, 1):
        writer.add_item(count - 1, {"image": np.ascontiguousarray(image, dtype=np.uint8), "label": int(label)})
    writer.done()
    writer.merge()
    return count


def check_shards(directory: Path) -> int:
    """The number of samples in the LitData dir `directory`; a missing, unreadable or truncated file of it
    (a chunk whose size is not the one its index records) is a DataError naming the file."""
    index = directory / INDEX
    if not index.is_file():
        raise DataError(f"{index} not found: write the shards with `python src/prepare.py data.loading=shards ...`")
    with reading(index):
        chunks = json.loads(index.read_text())["chunks"]
        expected = {chunk["filename"]: (chunk["chunk_bytes"], chunk["chunk_size"]) for chunk in chunks}
    for name, (size, _) in expected.items():
        path = directory / name
        found = path.stat().st_size if path.is_file() else None
        if found != size:
            state = (
                "missing" if found is None else f"{found} bytes where its index records {size}: truncated or corrupt"
            )
            raise DataError(
                f"{path} is {state}; write the shards again (delete {directory.parent} and run "
                "`python src/prepare.py ... data.loading=shards`)"
            )
    return sum(count for _, count in expected.values())


class NormalisedBatch:
    """Collates LitData's items into (images, labels): pixels / white, then normalised per channel, the same
    arithmetic per element as the in-memory and per-sample paths."""

    def __init__(self, white: float, mean: torch.Tensor, std: torch.Tensor):
        self.white, self.mean, self.std = white, mean, std

    def __call__(self, items: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.from_numpy(np.stack([item["image"] for item in items])).float() / self.white
        labels = torch.tensor([item["label"] for item in items], dtype=torch.int64)
        return (images - self.mean) / self.std, labels


def shard_loader(
    directory: Path,
    batch_size: int,
    seed: int,
    num_workers: int,
    pin_memory: bool,
    collate: NormalisedBatch,
    rank: int = 0,
    world_size: int = 1,
):
    """A LitData StreamingDataLoader over the training split `directory`, shuffled from (`seed`, epoch), for
    process `rank` of `world_size`. Under DDP the last samples that would give the ranks unequal numbers of
    batches are left out of the epoch (LitData's `drop_last`: fewer than a batch per rank and worker)."""
    from litdata import StreamingDataLoader, StreamingDataset
    from litdata.utilities.env import _DistributedEnv

    dataset = StreamingDataset(str(directory), shuffle=True, seed=seed, drop_last=world_size > 1)
    # LitData reads the process group when the dataset is made; runs read their data before Lightning starts
    # it (to verify it), so the rank is given here (a private class of litdata 0.2: no public setter).
    dataset.distributed_env = _DistributedEnv(world_size, rank, num_nodes=1)
    return StreamingDataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=collate,
        generator=torch.Generator(),  # DataLoader's base seed from its own generator, not the global RNG
    )
