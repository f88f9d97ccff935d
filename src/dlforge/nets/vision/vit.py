"""Vision Transformer (Dosovitskiy et al. 2020): patches -> tokens, a class token, pre-norm blocks."""

from __future__ import annotations

from typing import Annotated, Optional

import torch
from torch import nn

from dlforge.constraints import ParameterError, Positive, Probability
from dlforge.nets.layers.block import Block
from dlforge.nets.layers.init import truncated_normal_init


class ViT(nn.Module):
    def __init__(
        self,
        image_size: Annotated[int, Positive] = 32,
        patch_size: Annotated[int, Positive] = 4,
        in_channels: Annotated[int, Positive] = 3,
        dim: Annotated[int, Positive] = 192,
        depth: Annotated[int, Positive] = 6,
        heads: Annotated[int, Positive] = 3,
        mlp_ratio: Annotated[float, Positive] = 4.0,
        dropout: Annotated[float, Probability] = 0.0,
        head_dim: Optional[Annotated[int, Positive]] = None,
    ):
        super().__init__()
        if image_size % patch_size:
            raise ParameterError(
                "patch_size",
                f"{patch_size} does not divide image_size={image_size}; allowed: a divisor of {image_size}",
            )
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, num_patches + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout, head_dim=head_dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.out_features = dim
        self.apply(truncated_normal_init)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(images).flatten(2).transpose(1, 2)  # (batch, patches, dim)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        x = torch.cat([cls, tokens], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x[:, 0])
