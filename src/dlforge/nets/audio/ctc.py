"""CTC speech recognition: log-mel features, a strided convolution front end, a bidirectional GRU over the
frames and a linear layer to per-frame character logits (Deep Speech 2's shape, Amodei et al. 2016, small)."""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from dlforge.constraints import NonNegative, Positive, Probability
from dlforge.nets.audio.features import SAMPLE_RATE, LogMel
from dlforge.nets.layers.conv import conv_bn_relu
from dlforge.nets.text.rnn import recur, reversed_steps


class ConvBiGRU(nn.Module):
    """(batch, samples) 16 kHz waveforms and each one's length -> (batch, frames, vocab_size) logits (class 0
    the CTC blank) and each one's frames. Two 3x3 conv-BN-ReLU layers halve the mel bands twice and the frame
    rate once (`hop_ms` x 2 per output frame), `depth` bidirectional GRU layers of `dim` units per direction
    read the frames. The backward direction starts at a clip's own last frame: the padding of a batch reaches
    its outputs only through the convolutions' edge (a frame or two), not through the whole recurrence."""

    def __init__(
        self,
        vocab_size: Annotated[int, Positive],
        n_mels: Annotated[int, Positive] = 40,
        hop_ms: Annotated[float, Positive] = 15.0,
        channels: Annotated[int, Positive] = 16,
        dim: Annotated[int, Positive] = 128,
        depth: Annotated[int, Positive] = 1,
        dropout: Annotated[float, Probability] = 0.1,
        freq_masks: Annotated[int, NonNegative] = 2,
        freq_mask_width: Annotated[int, NonNegative] = 10,
        time_masks: Annotated[int, NonNegative] = 2,
        time_mask_width: Annotated[int, NonNegative] = 12,
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.sample_rate = SAMPLE_RATE
        self.features = LogMel(
            n_mels, hop_ms=hop_ms, freq_masks=freq_masks, freq_mask_width=freq_mask_width, time_masks=time_masks,
            time_mask_width=time_mask_width,
        )  # fmt: skip
        self.conv = nn.Sequential(
            *conv_bn_relu(1, channels, stride=2), *conv_bn_relu(channels, channels, stride=(2, 1))
        )
        bands = (n_mels + 1) // 2
        bands = (bands + 1) // 2
        self.project = nn.Linear(channels * bands, dim)
        between_layers = dropout if depth > 1 else 0.0
        self.stacks = nn.ModuleList(
            nn.GRU(dim, dim, num_layers=depth, batch_first=True, dropout=between_layers) for _ in range(2)
        )
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(2 * dim, vocab_size)

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if lengths is None:
            lengths = (
                torch.ones_like(waves[:, 0], dtype=torch.long) * waves.shape[1]
            )  # keeps the batch size symbolic (export)
        frames = (self.features.frames(lengths) - 1) // 2 + 1  # the first conv's stride 2 (kernel 3, padding 1)
        maps = self.conv(self.features(waves).unsqueeze(1))  # (batch, channels, bands, frames)
        steps = self.dropout(torch.relu(self.project(maps.flatten(1, 2).transpose(1, 2))))
        forward = recur(self.stacks[0], steps)[0]
        backward = reversed_steps(recur(self.stacks[1], reversed_steps(steps, frames))[0], frames)
        return self.out(self.dropout(torch.cat([forward, backward], dim=2))), frames
