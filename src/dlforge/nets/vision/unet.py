"""U-Net (Ronneberger et al. 2015): an encoder of conv stages, each halving the resolution, and a decoder
that upsamples back stage by stage, joining each stage's encoder features (the skips) to recover detail;
a 1x1 convolution gives every pixel its class logits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from torch import nn

from dlforge.constraints import ParameterError, Positive
from dlforge.nets.layers.conv import conv_bn_relu

# The inputs are images in [0, 1]; the net standardises them with ImageNet's statistics, as torchvision's
# detection models do, so that data for dense objectives stays in pixel units (masks and boxes line up).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class UNet(nn.Module):
    """`len(channels)` encoder stages of two 3x3 conv-BN-ReLU layers, 2x2 max-pooling between them; the
    decoder mirrors them with 2x2 transposed convolutions (halving the width) and two conv-BN-ReLU layers
    over the upsampled features concatenated with the encoder's of the same resolution."""

    def __init__(
        self,
        num_classes: Annotated[int, Positive],
        channels: Sequence[int] = (8, 16, 32, 64),
    ):
        super().__init__()
        channels = list(channels)  # a config's ListConfig does not slice backwards
        if len(channels) < 2:
            raise ParameterError("channels", f"{list(channels)} leaves nothing to downsample; allowed: 2+ widths")
        self.num_classes = num_classes
        self.size_divisor = 2 ** (len(channels) - 1)
        widths = [3, *channels]  # RGB in
        self.encoder = nn.ModuleList(
            nn.Sequential(*conv_bn_relu(width, out), *conv_bn_relu(out, out)) for width, out in zip(widths, channels)
        )
        self.pool = nn.MaxPool2d(2)
        deep_to_shallow = list(zip(channels[:0:-1], channels[-2::-1]))  # (128, 64), (64, 32), (32, 16)
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(deep, shallow, 2, stride=2) for deep, shallow in deep_to_shallow
        )
        self.decoder = nn.ModuleList(
            nn.Sequential(*conv_bn_relu(2 * shallow, shallow), *conv_bn_relu(shallow, shallow))
            for _, shallow in deep_to_shallow
        )
        self.head = nn.Conv2d(channels[0], num_classes, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        skips = []
        for depth, stage in enumerate(self.encoder):
            x = stage(x if depth == 0 else self.pool(x))
            skips.append(x)
        skips.pop()  # the deepest stage's output is x itself
        for upsample, decode in zip(self.upsample, self.decoder):
            x = decode(torch.cat([upsample(x), skips.pop()], dim=1))
        return self.head(x)
