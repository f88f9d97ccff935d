"""Convolution blocks shared by the vision nets."""

from __future__ import annotations

from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int, stride: int | tuple[int, int] = 1) -> list[nn.Module]:
    """A 3x3 convolution (no bias: the BatchNorm after it has one), BatchNorm and ReLU, as layers to splice
    into an nn.Sequential (a CNN's state_dict keys stay those of one flat Sequential)."""
    return [
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]
