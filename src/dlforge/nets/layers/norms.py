"""Normalisation layers by name, so a net's config can choose one."""

from __future__ import annotations

from typing import Literal

from torch import nn

NormKind = Literal["layernorm", "rmsnorm"]


def norm_layer(kind: NormKind, dim: int, bias: bool = True) -> nn.Module:
    """LayerNorm (Ba et al. 2016), or RMSNorm (Zhang & Sennrich 2019; LLaMA), which has no bias."""
    return nn.LayerNorm(dim, bias=bias) if kind == "layernorm" else nn.RMSNorm(dim, eps=1e-5)
