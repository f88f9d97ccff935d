"""LSTM / GRU stacks (Hochreiter & Schmidhuber 1997; Cho et al. 2014) as backbones of sequence classifiers.

One module reads either
- images row by row: (batch, channels, height, width) -> `height` steps of `channels * width` features, or
- token ids (batch, length), right-padded with `pad_id`, through an embedding when `vocab_size` is set.

The features are the final state of each reading direction: the last layer's output at each sequence's
own last token. Padding comes after that token, so it never reaches the features and a sequence gets
the same ones however much padding its batch needs. (Packed sequences would do the same, but run 4-7x
slower on CPU than these padded ones.)

`bidirectional` adds a second stack that reads every sequence backwards: its tokens reversed in place,
the padding left at the end. The two stacks are independent up to their final states, which are
concatenated; with one layer that is exactly torch's bidirectional RNN.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from torch import nn

from dlforge.constraints import Positive, Probability


class RNN(nn.Module):
    def __init__(
        self,
        cell: Literal["lstm", "gru"] = "lstm",
        # features per step: channels * width for images, the embedding size for tokens
        input_size: Annotated[int, Positive] = 8,
        dim: Annotated[int, Positive] = 128,  # hidden units per reading direction
        depth: Annotated[int, Positive] = 1,  # stacked layers
        bidirectional: bool = False,
        dropout: Annotated[float, Probability] = 0.0,  # between stacked layers and on the output features
        vocab_size: int | None = None,  # set for token inputs
        pad_id: int = 0,
    ):
        super().__init__()
        self.embedding = None if vocab_size is None else nn.Embedding(vocab_size, input_size)
        self.pad_id = pad_id
        self.bidirectional = bidirectional
        recurrence = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        between_layers = dropout if depth > 1 else 0.0  # torch warns about dropout after a single layer
        self.stacks = nn.ModuleList(
            recurrence(input_size, dim, num_layers=depth, batch_first=True, dropout=between_layers)
            for _ in range(2 if bidirectional else 1)
        )
        self.dropout = nn.Dropout(dropout)
        self.out_features = len(self.stacks) * dim

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.embedding is None:
            steps = inputs.permute(0, 2, 1, 3).flatten(2)  # (batch, height, channels * width): rows as steps
            lengths = torch.full((len(steps),), steps.shape[1], device=steps.device)
        else:
            steps = self.embedding(inputs)
            lengths = (inputs != self.pad_id).sum(dim=1).clamp(min=1)
        readings = [steps, reversed_steps(steps, lengths)] if self.bidirectional else [steps]
        last = (torch.arange(len(steps), device=steps.device), lengths - 1)
        finals = [recur(stack, reading)[0][last] for stack, reading in zip(self.stacks, readings)]
        return self.dropout(torch.cat(finals, dim=1))


def recur(stack: nn.Module, steps: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """The stack's outputs at every step and its final state, starting from `state` (a GRU's; None: zeros).
    Under CPU autocast the recurrence runs in fp32: oneDNN has bf16 LSTM/GRU kernels only on CPUs with
    AVX-512 ("could not create a primitive descriptor" on AVX2-only ones)."""
    if steps.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return stack(steps.float(), None if state is None else state.float())
    return stack(steps, state)


def reversed_steps(steps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each sequence's first `length` steps in reverse order, the padding after them left in place."""
    positions = torch.arange(steps.shape[1], device=steps.device)
    index = torch.where(positions < lengths[:, None], lengths[:, None] - 1 - positions, positions)
    return steps.gather(1, index[..., None].expand_as(steps))
