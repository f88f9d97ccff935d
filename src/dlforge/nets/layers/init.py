"""Weight initialisations, applied with `net.apply(...)` after the net is built."""

from __future__ import annotations

from torch import nn


def normal_init(module: nn.Module) -> None:
    """GPT-2's: weights of linear layers and embeddings from N(0, 0.02), zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def truncated_normal_init(module: nn.Module) -> None:
    """ViT's (timm): weights of linear layers from N(0, 0.02) truncated at +-2, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
