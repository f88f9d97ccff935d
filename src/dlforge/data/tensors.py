"""In-memory datasets that hand out whole batches by fancy indexing, not per-sample collation, and the
shuffled, resumable sampling every map-style dataset here is served with."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

from dlforge.data.sharding import per_process, rank_and_world_size


class TensorBatches(Dataset):
    """Tensors sharing their first dimension. DataLoader's fetcher calls `__getitems__` with the
    indices of a whole batch, so a batch is one indexing op per tensor whatever the sampler
    (random, sequential or Lightning's DistributedSampler)."""

    def __init__(self, *tensors: torch.Tensor):
        if len({len(tensor) for tensor in tensors}) != 1:
            raise ValueError("tensors differ in their first dimension")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return tuple(tensor[index] for tensor in self.tensors)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices)
        return tuple(tensor[index] for tensor in self.tensors)


def _already_batched(batch):
    return batch


class EpochShuffle(DistributedSampler):
    """A new order every epoch, drawn from (seed, epoch) alone and never from the global RNG, so a
    resumed run recreates it. Under DDP, rank r of n takes every n-th index of that order from the r-th
    on, so with per-process batches of batch_size / n the ranks' k-th batches together hold the k-th batch
    of a one-process run (when the split does not divide by n, its last batch repeats the order's first
    samples, as PyTorch's DistributedSampler pads). Lightning leaves a DistributedSampler in place.
    Starts the epoch's order at `start` (set by `ResumableLoader` for a resumed epoch)."""

    def __init__(self, dataset: Dataset, seed: int, rank: int = 0, world_size: int = 1):
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])


class LengthGroupedShuffle(EpochShuffle):
    """EpochShuffle's contract (an order from (seed, epoch) alone, ranks taking every n-th index, `start`), with
    samples of similar length batched together, so that batches trimmed to their longest sample compute little
    padding (fairseq's and HF's `group_by_length`): the epoch's shuffled order is cut into pools of `pool`
    batches of `batch_size` (the global batch), each pool is sorted by `lengths` and cut into batches, and the
    full batches are shuffled; a last, partial batch stays last, so every batch is whole under DDP too."""

    def __init__(
        self,
        dataset: Dataset,
        lengths: torch.Tensor,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        pool: int = 50,
    ):
        super().__init__(dataset, seed, rank, world_size)
        self.lengths, self.batch_size, self.pool = lengths, batch_size, pool

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=generator)
        grouped = torch.cat(
            [pool[self.lengths[pool].argsort(stable=True)] for pool in order.split(self.pool * self.batch_size)]
        )
        batches = grouped.split(self.batch_size)
        full = len(batches) - (len(batches[-1]) < self.batch_size)
        batches = [batches[i] for i in torch.randperm(full, generator=generator).tolist()] + list(batches[full:])
        indices = torch.cat(batches).tolist()
        indices += indices[: self.total_size - len(indices)]  # DistributedSampler's padding: equal shares
        return iter(indices[self.rank : self.total_size : self.num_replicas][self.start :])


class SeededEpochShuffle(EpochShuffle):
    """EpochShuffle's order, each index handed out as `(index, seed)` with a seed drawn from (the loader's
    seed, the epoch, the index) alone: the dataset draws that sample's random augmentation from it, so the
    augmentation is the same in whichever worker process or DDP rank reads the sample, and a resumed run
    repeats it."""

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in super().__iter__():
            yield index, int(np.random.SeedSequence((self.seed, self.epoch, index)).generate_state(1, np.uint64)[0])


class ResumableLoader(DataLoader):
    """A DataLoader over an `EpochShuffle` with `state_dict`/`load_state_dict`, which Lightning saves in
    checkpoints and restores before the first batch of a resumed run: it then goes on mid-epoch where it
    stopped. The position counts the samples of the batches this loader has handed out, not the indices
    its sampler has given away: worker processes fetch batches ahead of the training loop."""

    position = 0  # samples handed out so far this epoch
    resume_from: dict[str, int] | None = None  # the state a resumed epoch continues from

    def __iter__(self) -> Iterator:
        resume, self.resume_from = self.resume_from, None
        shuffle = self.sampler if isinstance(self.sampler, EpochShuffle) else None
        self.position = resume["position"] if shuffle and resume and resume["epoch"] == shuffle.epoch else 0
        if shuffle:
            shuffle.start = self.position
        for batch in super().__iter__():
            self.position = min(self.position + self.batch_size, len(self.sampler))
            yield batch

    def state_dict(self) -> dict[str, int]:
        # Lightning swaps in a SequentialSampler for `overfit_batches`: nothing to resume then
        return (
            {"epoch": self.sampler.epoch, "position": self.position} if isinstance(self.sampler, EpochShuffle) else {}
        )

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state:
            self.resume_from = state


def batch_loader(
    dataset: TensorBatches,
    batch_size: int,
    shuffle: bool,
    rank: int = 0,
    world_size: int = 1,
    group_lengths: torch.Tensor | None = None,
) -> DataLoader:
    """Whole batches sliced in the main process. Shuffled loaders follow the global seed
    (`torch.initial_seed()`) and the epoch and can resume mid-epoch. No loader draws from the global RNG
    (each has its own generator for DataLoader's base seed), so that stays the augmentation's and
    dropout's alone, as a resumed run expects. `batch_size` is this process's share (`rank` of
    `world_size`) of a batch. `group_lengths`: shuffled batches hold samples of similar length
    (`LengthGroupedShuffle`)."""
    return loader(
        dataset, batch_size, shuffle, rank, world_size, group_lengths=group_lengths, collate_fn=_already_batched
    )


def loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    rank: int = 0,
    world_size: int = 1,
    item_seeds: bool = False,
    group_lengths: torch.Tensor | None = None,
    **options,
) -> DataLoader:
    """`batch_loader`'s sampling for any map-style dataset; `options` go to the DataLoader. Unshuffled
    (evaluation) loaders give each sample to one process exactly once, so metrics synced over the processes
    count every sample once, as in one process (the ranks' last batches may differ by one sample). With
    `item_seeds`, a shuffled loader asks its dataset for `(index, seed)` items (`SeededEpochShuffle`); with
    `group_lengths` (one per sample) instead, it batches samples of similar length (`LengthGroupedShuffle`)."""
    if not shuffle:
        sampler = UnrepeatedDistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, generator=torch.Generator(), **options)
    seed = torch.initial_seed() % 2**62
    if group_lengths is not None:
        sampler = LengthGroupedShuffle(dataset, group_lengths, batch_size * world_size, seed, rank, world_size)
    else:
        sampler = (SeededEpochShuffle if item_seeds else EpochShuffle)(dataset, seed, rank, world_size)
    return ResumableLoader(dataset, batch_size=batch_size, sampler=sampler, generator=torch.Generator(), **options)


def sample_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    pin_memory: bool,
    collate_fn: Callable = default_collate,
    rank: int = 0,
    world_size: int = 1,
    item_seeds: bool = False,
) -> DataLoader:
    """Items read one at a time, in `num_workers` worker processes (kept across epochs) when > 0, and
    collated into batches: for items that are read from disk or vary in size. Sampled, shuffled and
    resumed as `batch_loader`'s batches, so both give the same batches in the same order. `item_seeds`:
    shuffled items come with a seed for their random augmentation (`SeededEpochShuffle`)."""
    return loader(
        dataset,
        batch_size,
        shuffle,
        rank,
        world_size,
        item_seeds,
        collate_fn=collate_fn,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (kept, held_out), holding out `fraction` of every class, the same for the same seed."""
    if not 0 < fraction < 1:
        raise ValueError(f"split fraction must be in (0, 1), got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    kept, held_out = [], []
    for label in labels.unique(sorted=True):
        members = (labels == label).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=generator)]
        count = round(fraction * len(members))
        held_out.append(members[:count])
        kept.append(members[count:])
    return torch.cat(kept).sort().values, torch.cat(held_out).sort().values


class SplitsData(LightningDataModule):
    """A DataModule whose `setup` fills `splits` ("train", "val", "test") with map-style datasets, served in
    `batch_size` (shuffled, resumable) and `eval_batch_size` batches by `loader`: whole in-memory
    `TensorBatches` unless a subclass serves its datasets otherwise. Both sizes are global: under DDP each
    process takes its share of every batch (`dlforge.data.sharding`)."""

    batch_size: int
    eval_batch_size: int
    splits: dict[str, Dataset]

    def train_dataloader(self):
        return self._split_loader("train", self.batch_size, "data.batch_size", shuffle=True)

    def val_dataloader(self):
        return self._split_loader("val", self.eval_batch_size, "data.eval_batch_size", shuffle=False)

    def test_dataloader(self):
        return self._split_loader("test", self.eval_batch_size, "data.eval_batch_size", shuffle=False)

    def _split_loader(self, split: str, batch_size: int, key: str, shuffle: bool) -> DataLoader:
        rank, world_size = rank_and_world_size(self.trainer)
        return self.loader(self.splits[split], per_process(batch_size, world_size, key), shuffle, rank, world_size)

    def loader(self, dataset: Dataset, batch_size: int, shuffle: bool, rank: int, world_size: int) -> DataLoader:
        """`batch_size` samples of `dataset` per batch for process `rank` of `world_size`."""
        return batch_loader(dataset, batch_size, shuffle, rank, world_size)


def random_shift(images: torch.Tensor, max_pixels: int) -> torch.Tensor:
    """Translate each image by a whole number of pixels in [-max_pixels, max_pixels] on both axes, the
    border repeated (a random crop of the padded image, in one gather; no resampling blur)."""
    batch, _, height, width = images.shape
    padded = F.pad(images, [max_pixels] * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_pixels + 1, (2, batch, 1), device=images.device)
    rows = (torch.arange(height, device=images.device) + offsets[0])[:, :, None]  # (batch, height, 1)
    cols = (torch.arange(width, device=images.device) + offsets[1])[:, None, :]  # (batch, 1, width)
    batch_index = torch.arange(batch, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch_index, rows, cols].permute(0, 3, 1, 2).contiguous()


def random_hflip(images: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(images.shape[0], device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)
