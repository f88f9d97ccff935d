"""Position information for attention, which on its own is blind to order: learned absolute positions
(GPT-2, BERT), sinusoids (Vaswani et al. 2017), rotary positions (RoFormer, Su et al. 2021) and the
query-key distances of relative attention (Transformer-XL)."""

from __future__ import annotations

import torch
from torch import nn

ROPE_BASE = 10000.0  # the rotary frequencies' base, as in RoFormer and LLaMA


class LearnedPositions(nn.Embedding):
    """One learned vector per position, called with a range of positions: (end - start, dim).

    An `nn.Embedding` (same parameters and initialisation), so freezing a net's embeddings freezes
    its positions too."""

    def forward(self, start: int, end: int) -> torch.Tensor:
        return super().forward(torch.arange(start, end, device=self.weight.device))


def sinusoids(count: int, dim: int, device: torch.device) -> torch.Tensor:
    """The sinusoidal encodings of positions (or distances) 0 .. count - 1: (count, dim)."""
    inverse_frequency = 1.0 / 10000 ** (torch.arange(0, dim, 2, device=device) / dim)
    angles = torch.arange(count, device=device)[:, None] * inverse_frequency
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def rotary_tables(head_dim: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angle position * base^(-2i/head_dim), shape (length, head_dim / 2)."""
    frequencies = ROPE_BASE ** (-torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.outer(torch.arange(length).float(), frequencies)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs (x[i], x[i + head_dim/2]) of every head by their position's angles, so that
    q.k depends on the positions of q and k only through their difference."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


def relative_distances(length: int, past: int, device: torch.device) -> torch.Tensor:
    """(length, past + length): how far each of `length` queries, the positions after `past` earlier
    ones, is from each key over [past; queries]; negative for keys in the query's future."""
    steps = torch.arange(past + length, device=device)
    return steps[past:, None] - steps[None, :]
