"""Keyword spotting: the VGG-style CNN of the vision nets over a clip's log-mel image (mels x frames)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from torch import nn

from dlforge.constraints import NonNegative, Positive, Probability
from dlforge.nets.audio.features import LogMel
from dlforge.nets.vision.cnn import CNN


class KeywordCNN(nn.Module):
    """(batch, samples) 16 kHz clips -> (batch, out_features): a `Backbone`, so the classification objective
    trains it. Features as `LogMel` (SpecAugment in training), then `CNN` with one input channel."""

    def __init__(
        self,
        n_mels: Annotated[int, Positive] = 40,
        hop_ms: Annotated[float, Positive] = 20.0,
        channels: Sequence[int] = (16, 32, 64),
        convs_per_stage: Annotated[int, Positive] = 2,
        dropout: Annotated[float, Probability] = 0.1,
        freq_masks: Annotated[int, NonNegative] = 2,
        freq_mask_width: Annotated[int, NonNegative] = 6,
        time_masks: Annotated[int, NonNegative] = 2,
        time_mask_width: Annotated[int, NonNegative] = 5,
    ):
        super().__init__()
        self.features = LogMel(
            n_mels, hop_ms=hop_ms, freq_masks=freq_masks, freq_mask_width=freq_mask_width, time_masks=time_masks,
            time_mask_width=time_mask_width,
        )  # fmt: skip
        self.cnn = CNN(1, channels, convs_per_stage, image_size=n_mels, dropout=dropout)
        self.out_features = self.cnn.out_features

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return self.cnn(self.features(waves).unsqueeze(1))
