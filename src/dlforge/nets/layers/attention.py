"""Multi-head attention pieces shared by the Transformer families: the attention kernel, the split into
heads and back, a key/value cache, self-attention (bidirectional or causal, optionally rotary and
cached) and cross-attention (an encoder-decoder's decoder reading the encoder's states). Transformer-XL's
relative attention builds on the same pieces."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlforge.constraints import ParameterError
from dlforge.nets.layers.positions import apply_rotary


def scaled_dot_product(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False
) -> torch.Tensor:
    """`F.scaled_dot_product_attention` (softmax(q k^T / sqrt(head_dim)) v) with a CPU fix for bf16/fp16.

    `causal`: the queries are the last positions of the keys (there may be more keys, cached before
    them) and each sees itself and every earlier key. `mask` (True or a float added to the scores:
    attend) is the alternative for any other pattern.

    On CPU, torch's reduced-precision attention kernels are slow at small shapes: at the baby GPT's and
    the digits ViT's shapes (forward and backward) flash attention in bf16 is 4-10x slower than in
    fp32, and the math backend in bf16 1.2-1.5x slower. So reduced-precision attention on CPU is
    computed in fp32, outside autocast, and cast back: faster, and at least as precise.
    """
    queries, keys = q.shape[-2], k.shape[-2]
    if causal and queries != keys:  # torch's is_causal aligns the queries with the first keys, not the last
        causal = False
        if queries > 1:  # a single new query sees every key
            mask = torch.ones(queries, keys, dtype=torch.bool, device=q.device).tril(diagonal=keys - queries)
    if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16):
        if mask is not None and mask.is_floating_point():
            mask = mask.float()
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, is_causal=causal)
        return out.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


def attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim)) spelled out, in fp32: (..., queries, keys), zero where the boolean `mask`
    is False. `scaled_dot_product` is these weights times v, without ever holding them (fused kernels): this is
    for showing what a layer attends to, not for training."""
    scores = (q.float() @ k.float().transpose(-2, -1)) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, -torch.inf)
    return scores.softmax(-1)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., length, heads * head_dim) -> (..., heads, length, head_dim), a view."""
    return x.unflatten(-1, (heads, -1)).transpose(-3, -2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(..., heads, length, head_dim) -> (..., length, heads * head_dim)."""
    return x.transpose(-3, -2).flatten(-2)


class KVCache:
    """The keys and values one attention layer has computed so far; each call appends the new ones."""

    def __init__(self):
        self.keys: torch.Tensor | None = None  # (batch, heads, positions, head_dim)
        self.values: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def extend(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys is not None:
            keys, values = torch.cat([self.keys, keys], dim=2), torch.cat([self.values, values], dim=2)
        self.keys, self.values = keys, values
        return keys, values

    def select(self, rows: torch.Tensor) -> None:
        """Keep the cached rows `rows` (batch indices, repeats allowed), in that order: beam search moves
        each hypothesis's history to the beam that continues it."""
        if self.keys is not None:
            self.keys, self.values = self.keys[rows], self.values[rows]


class SelfAttention(nn.Module):
    """Project to queries, keys and values per head, attend, merge heads, project back."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, bias: bool = True, head_dim: int | None = None):
        """`head_dim`: each head's width; None: dim / heads. A net with heads pruned away keeps its heads'
        width with fewer of them, so its heads span less than `dim`."""
        super().__init__()
        if head_dim is None:
            if dim % heads:
                # `heads` and `dim` are the net's own parameters, passed through: name them as the net's
                raise ParameterError("heads", f"{heads} does not divide dim={dim}; allowed: a divisor of {dim}")
            head_dim = dim // heads
        self.heads, self.head_dim = heads, head_dim
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=bias)
        self.proj = nn.Linear(heads * head_dim, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """x: (batch, length, dim). `mask`, `causal`: as in `scaled_dot_product`; `rotary`: the (cos, sin)
        tables of x's positions; `cache`: the keys and values of the positions before x, extended by x's."""
        q, k, v = (split_heads(part, self.heads) for part in self.qkv(x).chunk(3, dim=-1))
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        if cache is not None:
            k, v = cache.extend(k, v)
        out = scaled_dot_product(q, k, v, mask=mask, causal=causal)  # (batch, heads, length, head_dim)
        return self.dropout(self.proj(merge_heads(out)))


class CrossAttention(nn.Module):
    """Queries from x, keys and values from another sequence (`memory`, the encoder's states), projected
    per head; attend, merge heads, project back."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, bias: bool = True, memory_dim: int | None = None):
        """`memory_dim`: the width of the memory's vectors; None: dim."""
        super().__init__()
        if dim % heads:
            raise ParameterError("heads", f"{heads} does not divide dim={dim}; allowed: a divisor of {dim}")
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=bias)
        self.kv = nn.Linear(memory_dim or dim, 2 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """x: (batch, length, dim), memory: (batch, memory_length, memory_dim); `mask` (batch, memory_length):
        True at the memory positions to attend to (not padding). An empty `cache` receives the memory's keys
        and values, a filled one supplies them: the memory does not change while a decoder writes."""
        q, k, v = self._heads(x, memory, cache)
        out = scaled_dot_product(q, k, v, mask=None if mask is None else mask[:, None, None, :])
        return self.dropout(self.proj(merge_heads(out)))

    def weights(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """What each head of `forward(x, memory, mask)` attends to: (batch, heads, length, memory_length), each
        row a distribution over the memory's unmasked positions (`attention_weights`)."""
        q, k, _ = self._heads(x, memory)
        return attention_weights(q, k, None if mask is None else mask[:, None, None, :])

    def _heads(
        self, x: torch.Tensor, memory: torch.Tensor, cache: KVCache | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values per head (batch, heads, length, head_dim)."""
        q = split_heads(self.q(x), self.heads)
        if cache is not None and len(cache):
            return q, cache.keys, cache.values
        k, v = (split_heads(part, self.heads) for part in self.kv(memory).chunk(2, dim=-1))
        if cache is not None:
            cache.extend(k, v)
        return q, k, v
