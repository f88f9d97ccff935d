"""A VGG-style convolutional backbone: stages of conv-BN-ReLU, each halving the resolution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from torch import nn

from dlforge.constraints import Positive, Probability
from dlforge.nets.layers.conv import conv_bn_relu


class CNN(nn.Module):
    """`len(channels)` stages of `convs_per_stage` 3x3 conv-BN-ReLU layers, each stage followed by
    2x2 max-pooling (while the feature map is larger than 1x1), then global average pooling."""

    def __init__(
        self,
        in_channels: Annotated[int, Positive] = 3,
        channels: Sequence[int] = (32, 64, 128),
        convs_per_stage: Annotated[int, Positive] = 2,
        image_size: Annotated[int, Positive] = 32,
        dropout: Annotated[float, Probability] = 0.0,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width, size = in_channels, image_size
        for stage_width in channels:
            for _ in range(convs_per_stage):
                layers += conv_bn_relu(width, stage_width)
                width = stage_width
            if size > 1:
                layers.append(nn.MaxPool2d(2))
                size //= 2
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.out_features = width

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.features(images).mean(dim=(2, 3)))
