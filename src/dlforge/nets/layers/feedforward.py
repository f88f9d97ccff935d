"""The position-wise feed-forward layers of Transformer blocks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """GPT-2's and BERT's feed-forward layer: widen to `hidden`, GELU, project back."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.fc = nn.Linear(dim, hidden, bias=bias)
        self.proj = nn.Linear(hidden, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class SwiGLU(nn.Module):
    """LLaMA's feed-forward layer (Shazeer 2020): silu(gate(x)) * up(x), projected back. It is 2/3 as
    wide as the GELU MLP of `hidden` units (rounded up to a multiple of 32) so that it has about as many
    parameters: LLaMA's 8/3 dim for hidden = 4 dim."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        width = 32 * math.ceil(2 * hidden / 3 / 32)
        self.gate = nn.Linear(dim, width, bias=bias)
        self.up = nn.Linear(dim, width, bias=bias)
        self.proj = nn.Linear(width, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.silu(self.gate(x)) * self.up(x)))
