"""In-memory datasets that hand out whole batches by fancy indexing, not per-sample collation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset


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


def batch_loader(dataset: TensorBatches, batch_size: int, shuffle: bool) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=_already_batched)


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
