"""The pre-norm Transformer block of ViT, the encoder and GPT."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from dlforge.nets.layers.attention import KVCache, SelfAttention
from dlforge.nets.layers.feedforward import MLP, SwiGLU
from dlforge.nets.layers.norms import NormKind, norm_layer


class Block(nn.Module):
    """x + attn(norm(x)), then x + mlp(norm(x)). The feed-forward layer is `mlp_ratio * dim` wide: a GELU
    MLP, or a SwiGLU with about as many parameters. `head_dim`: as `SelfAttention`'s."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        bias: bool = True,
        norm: NormKind = "layernorm",
        mlp: Literal["gelu", "swiglu"] = "gelu",
        head_dim: int | None = None,
    ):
        super().__init__()
        self.norm1 = norm_layer(norm, dim, bias)
        self.attn = SelfAttention(dim, heads, dropout, bias, head_dim)
        self.norm2 = norm_layer(norm, dim, bias)
        self.mlp = (MLP if mlp == "gelu" else SwiGLU)(dim, int(dim * mlp_ratio), dropout, bias)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """The arguments after x go to the attention (`SelfAttention.forward`)."""
        x = x + self.attn(self.norm1(x), mask=mask, causal=causal, rotary=rotary, cache=cache)
        return x + self.mlp(self.norm2(x))
