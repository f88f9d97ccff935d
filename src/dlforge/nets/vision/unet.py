"""U-Net (Ronneberger et al. 2015): an encoder of conv stages, each halving the resolution, and a decoder
that upsamples back stage by stage, joining each stage's encoder features (the skips) to recover detail;
a 1x1 convolution gives every pixel its class logits. With a strided stem the stages start at half the
resolution and the logits are upsampled bilinearly, as DeepLab's and most modern decoders' are: a quarter of
the full-resolution activations (the costliest part of a step on a CPU) and twice the receptive field, for
the same work per stage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from dlforge.constraints import ParameterError, Positive
from dlforge.nets.layers.conv import conv_bn_relu

# The inputs are images in [0, 1]; the net standardises them with ImageNet's statistics, as torchvision's
# detection models do, so that data for dense objectives stays in pixel units (masks and boxes line up).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class UNet(nn.Module):
    """`len(channels)` encoder stages of two 3x3 conv-BN-ReLU layers, 2x2 max-pooling between them; the
    decoder mirrors them with 2x2 transposed convolutions (halving the width) and two conv-BN-ReLU layers
    over the upsampled features concatenated with the encoder's of the same resolution. Every decoder
    stage and the bottleneck have a 1x1 logit head; the logits are summed coarse to fine. `stem_stride=2`
    makes the first convolution stride 2 and upsamples the logits back bilinearly."""

    def __init__(
        self,
        num_classes: Annotated[int, Positive],
        channels: Sequence[int] = (8, 16, 32, 64),
        stem_stride: Annotated[int, Positive] = 1,
    ):
        super().__init__()
        channels = list(channels)  # a config's ListConfig does not slice backwards
        if len(channels) < 2:
            raise ParameterError("channels", f"{list(channels)} leaves nothing to downsample; allowed: 2+ widths")
        if stem_stride not in (1, 2):
            raise ParameterError("stem_stride", f"{stem_stride}; allowed: 1 (full resolution), 2 (half)")
        self.num_classes = num_classes
        self.stem_stride = stem_stride
        self.size_divisor = stem_stride * 2 ** (len(channels) - 1)
        widths = [3, *channels]  # RGB in
        self.encoder = nn.ModuleList(
            nn.Sequential(*conv_bn_relu(width, out, stride=stem_stride if depth == 0 else 1), *conv_bn_relu(out, out))
            for depth, (width, out) in enumerate(zip(widths, channels))
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
        # A 1x1 logit head on the bottleneck and on every decoder stage, their logits upsampled and summed
        # (FCN's skip fusion): the deep, wide features that see whole objects decide the class with a direct
        # gradient, the shallow ones refine the outline. With only the last head, the skips' local colour and
        # edges fit the background/object split first and the class barely trains (mIoU 0.12 after 400 steps).
        self.heads = nn.ModuleList(nn.Conv2d(width, num_classes, 1) for width in channels[::-1])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        skips = []
        for depth, stage in enumerate(self.encoder):
            x = stage(x if depth == 0 else self.pool(x))
            skips.append(x)
        skips.pop()  # the deepest stage's output is x itself
        logits = self.heads[0](x)
        for upsample, decode, head in zip(self.upsample, self.decoder, self.heads[1:]):
            x = decode(torch.cat([upsample(x), skips.pop()], dim=1))
            logits = head(x) + F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if self.stem_stride == 1:
            return logits
        return F.interpolate(logits, scale_factor=self.stem_stride, mode="bilinear", align_corners=False)
