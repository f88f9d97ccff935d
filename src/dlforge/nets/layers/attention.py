"""Multi-head self-attention shared by the Transformer families."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def scaled_dot_product(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False
) -> torch.Tensor:
    """`F.scaled_dot_product_attention` (softmax(q k^T / sqrt(head_dim)) v) with a CPU fix for bf16/fp16.

    On CPU, torch's reduced-precision attention kernels are slow at small shapes: at the baby GPT's and
    the digits ViT's shapes (forward and backward) flash attention in bf16 is 4-10x slower than in
    fp32, and the math backend in bf16 1.2-1.5x slower. So reduced-precision attention on CPU is
    computed in fp32, outside autocast, and cast back: faster, and at least as precise.
    """
    if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16):
        if mask is not None and mask.is_floating_point():
            mask = mask.float()
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, is_causal=causal)
        return out.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


class SelfAttention(nn.Module):
    """Project to queries, keys and values per head, attend, merge heads, project back."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = scaled_dot_product(q, k, v, mask=mask, causal=causal)  # (batch, heads, length, head_dim)
        return self.dropout(self.proj(out.transpose(1, 2).reshape(batch, length, dim)))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(dim, hidden)
        self.proj = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask=mask, causal=causal)
        return x + self.mlp(self.norm2(x))
