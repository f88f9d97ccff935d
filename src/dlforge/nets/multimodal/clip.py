"""CLIP's dual encoder (Radford et al. 2021): any image Backbone and any text Backbone over token ids, each
followed by a linear projection (no bias, as CLIP's) into one shared space. The contrastive objective
normalises the embeddings and owns the temperature."""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from dlforge.constraints import Positive


class CLIP(nn.Module):
    def __init__(self, image_tower: nn.Module, text_tower: nn.Module, embed_dim: Annotated[int, Positive] = 128):
        super().__init__()
        self.image_tower = image_tower
        self.text_tower = text_tower
        self.image_projection = nn.Linear(image_tower.out_features, embed_dim, bias=False)
        self.text_projection = nn.Linear(text_tower.out_features, embed_dim, bias=False)
        self.embed_dim = embed_dim

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_tower(images)

    def project_image(self, features: torch.Tensor) -> torch.Tensor:
        return self.image_projection(features)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text_projection(self.text_tower(tokens))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both embeddings of a batch of (image, text) pairs."""
        return self.project_image(self.image_features(images)), self.encode_text(tokens)
