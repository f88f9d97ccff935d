"""In-memory datasets that hand out whole batches by fancy indexing, not per-sample collation."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, DistributedSampler


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
    resumed run recreates it. Under DDP each process takes its share, as with Lightning's own
    DistributedSampler (which therefore leaves this one in place). Counts the samples it hands out,
    so a checkpoint knows how far into the epoch training got and a resumed epoch skips them."""

    def __init__(self, dataset: Dataset, seed: int):
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        replicas = {} if distributed else {"num_replicas": 1, "rank": 0}
        super().__init__(dataset, shuffle=True, seed=seed, **replicas)
        self.position = 0  # samples handed out so far this epoch
        self.resume_from: dict[str, int] | None = None  # the state a resumed epoch continues from

    def __iter__(self) -> Iterator[int]:
        resume, self.resume_from = self.resume_from, None
        self.position = resume["position"] if resume and resume["epoch"] == self.epoch else 0
        for index in list(super().__iter__())[self.position :]:
            self.position += 1
            yield index

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume_from = state


class ResumableLoader(DataLoader):
    """A DataLoader with `state_dict`/`load_state_dict`, which Lightning saves in checkpoints and
    restores before the first batch of a resumed run: it then goes on mid-epoch where it stopped."""

    def state_dict(self) -> dict[str, int]:
        # Lightning swaps in a SequentialSampler for `overfit_batches`: nothing to resume then
        return self.sampler.state_dict() if isinstance(self.sampler, EpochShuffle) else {}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state and isinstance(self.sampler, EpochShuffle):
            self.sampler.load_state_dict(state)


def batch_loader(dataset: TensorBatches, batch_size: int, shuffle: bool) -> DataLoader:
    """Shuffled loaders follow the global seed (`torch.initial_seed()`) and the epoch and can resume
    mid-epoch. No loader draws from the global RNG (each has its own generator for DataLoader's
    base seed), so that stays the augmentation's and dropout's alone, as a resumed run expects."""
    if not shuffle:
        return DataLoader(dataset, batch_size=batch_size, collate_fn=_already_batched, generator=torch.Generator())
    sampler = EpochShuffle(dataset, seed=torch.initial_seed() % 2**62)
    return ResumableLoader(
        dataset, batch_size=batch_size, sampler=sampler, collate_fn=_already_batched, generator=torch.Generator()
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


class InMemorySplits(LightningDataModule):
    """A DataModule whose `setup` fills `splits` ("train", "val", "test") with in-memory `TensorBatches`,
    served in `batch_size` (shuffled, resumable) and `eval_batch_size` batches."""

    batch_size: int
    eval_batch_size: int
    splits: dict[str, TensorBatches]

    def train_dataloader(self):
        return batch_loader(self.splits["train"], self.batch_size, shuffle=True)

    def val_dataloader(self):
        return batch_loader(self.splits["val"], self.eval_batch_size, shuffle=False)

    def test_dataloader(self):
        return batch_loader(self.splits["test"], self.eval_batch_size, shuffle=False)


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
