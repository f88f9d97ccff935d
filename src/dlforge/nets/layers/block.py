"""The pre-norm Transformer block of ViT, the encoder and GPT, and the decoder block of an encoder-decoder."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from dlforge.nets.layers.attention import CrossAttention, KVCache, SelfAttention
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


class DecoderBlock(Block):
    """An encoder-decoder's decoder block (Vaswani et al. 2017, pre-norm): x + causal self-attn(norm(x)), then
    x + cross-attn(norm(x), memory), then x + mlp(norm(x)). The arguments are `Block`'s."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0, bias: bool = True):
        super().__init__(dim, heads, mlp_ratio, dropout, bias)
        self.norm_cross = norm_layer("layernorm", dim, bias)
        self.cross = CrossAttention(dim, heads, dropout, bias)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        cache: tuple[KVCache, KVCache] | None = None,
    ) -> torch.Tensor:
        """`memory`, `memory_mask`: as `CrossAttention.forward`'s; `cache`: the self-attention's and the
        cross-attention's caches."""
        own, cross = cache if cache is not None else (None, None)
        x = self._self_attended(x, own)
        x = x + self.cross(self.norm_cross(x), memory, memory_mask, cross)
        return x + self.mlp(self.norm2(x))

    def cross_weights(
        self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The cross-attention's weights in `forward(x, memory, memory_mask)`: (batch, heads, length,
        memory_length) (`CrossAttention.weights`)."""
        return self.cross.weights(self.norm_cross(self._self_attended(x)), memory, memory_mask)

    def _self_attended(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """x after the causal self-attention, which the cross-attention reads."""
        return x + self.attn(self.norm1(x), causal=True, cache=cache)
