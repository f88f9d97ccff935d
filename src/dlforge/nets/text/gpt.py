"""A decoder-only Transformer language model, readable top to bottom like nanoGPT, in two styles:

gpt2:  LayerNorm, learned absolute position embeddings, GELU MLP (Radford et al. 2019).
llama: RMSNorm, rotary position embeddings (Su et al. 2021), SwiGLU MLP (Touvron et al. 2023).

Both tie the token embedding to the output layer. `forward(idx, cache)` with a KV cache (one
`KVCache` per layer, from `new_cache()`) runs only the new tokens, attending to the keys and values
cached for the earlier ones: generation then costs one position per token instead of the whole context.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dlforge.nets.layers.attention import scaled_dot_product

ROPE_BASE = 10000.0  # the rotary frequencies' base, as in RoFormer and LLaMA


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


def rotary_tables(head_dim: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angle position * base^(-2i/head_dim), shape (length, head_dim / 2)."""
    frequencies = ROPE_BASE ** (-torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.outer(torch.arange(length).float(), frequencies)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs (x[i], x[i + head_dim/2]) of every head by their position's angles, so that
    q.k depends on the positions of q and k only through their difference."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, bias: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None, cache: KVCache | None) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        if cache is not None:
            k, v = cache.extend(k, v)
        out = scaled_dot_product(q, k, v, **_causal_mask(length, k.shape[2], x.device))
        return self.dropout(self.proj(out.transpose(1, 2).reshape(batch, length, dim)))


def _causal_mask(queries: int, keys: int, device: torch.device) -> dict:
    """Each of the last `queries` positions sees itself and every earlier key."""
    if queries == keys:
        return {"causal": True}
    if queries == 1:
        return {}  # one new token after the cached ones sees them all
    return {"mask": torch.ones(queries, keys, dtype=torch.bool, device=device).tril(diagonal=keys - queries)}


class MLP(nn.Module):
    """GPT-2's feed-forward layer: 4x wider, GELU."""

    def __init__(self, dim: int, dropout: float, bias: bool):
        super().__init__()
        self.fc = nn.Linear(dim, 4 * dim, bias=bias)
        self.proj = nn.Linear(4 * dim, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class SwiGLU(nn.Module):
    """LLaMA's feed-forward layer: silu(gate(x)) * up(x), 8/3 wider (rounded up to a multiple of 32),
    so it has about as many parameters as the 4x GELU MLP."""

    def __init__(self, dim: int, dropout: float, bias: bool):
        super().__init__()
        hidden = 32 * math.ceil(8 * dim / 3 / 32)
        self.gate = nn.Linear(dim, hidden, bias=bias)
        self.up = nn.Linear(dim, hidden, bias=bias)
        self.proj = nn.Linear(hidden, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.silu(self.gate(x)) * self.up(x)))


def _norm(arch: str, dim: int, bias: bool) -> nn.Module:
    return nn.LayerNorm(dim, bias=bias) if arch == "gpt2" else nn.RMSNorm(dim, eps=1e-5)


class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, arch: str, dim: int, heads: int, dropout: float, bias: bool):
        super().__init__()
        self.norm1 = _norm(arch, dim, bias)
        self.attn = CausalSelfAttention(dim, heads, dropout, bias)
        self.norm2 = _norm(arch, dim, bias)
        self.mlp = (MLP if arch == "gpt2" else SwiGLU)(dim, dropout, bias)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None, cache: KVCache | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rotary, cache)
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """Token ids (batch, length) -> next-token logits (batch, length, vocab_size), length <= block_size."""

    def __init__(
        self,
        vocab_size: int,
        block_size: int = 64,
        depth: int = 4,
        heads: int = 4,
        dim: int = 128,
        dropout: float = 0.0,
        bias: bool = False,
        arch: Literal["gpt2", "llama"] = "gpt2",
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.arch = arch
        self.block_size = block_size
        self.wte = nn.Embedding(vocab_size, dim)
        if arch == "gpt2":
            self.wpe = nn.Embedding(block_size, dim)
        else:  # rotary tables: derived, so not saved in checkpoints
            cos, sin = rotary_tables(dim // heads, block_size)
            self.register_buffer("rotary_cos", cos, persistent=False)
            self.register_buffer("rotary_sin", sin, persistent=False)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(arch, dim, heads, dropout, bias) for _ in range(depth))
        self.norm = _norm(arch, dim, bias)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying (Press & Wolf 2017)
        self.apply(_init_weights)
        for name, parameter in self.named_parameters():
            if name.endswith("proj.weight"):  # GPT-2: residual projections scaled down with depth
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * depth))

    def new_cache(self) -> list[KVCache]:
        return [KVCache() for _ in self.blocks]

    def forward(self, idx: torch.Tensor, cache: list[KVCache] | None = None) -> torch.Tensor:
        """Logits for every position of `idx`; with a cache, `idx` continues the tokens cached so far."""
        start = len(cache[0]) if cache is not None else 0
        end = start + idx.shape[1]
        if end > self.block_size:
            raise ValueError(f"{end} positions exceed block_size {self.block_size}")
        x = self.wte(idx)
        rotary = None
        if self.arch == "gpt2":
            x = x + self.wpe(torch.arange(start, end, device=idx.device))
        else:
            rotary = (self.rotary_cos[start:end], self.rotary_sin[start:end])
        x = self.drop(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, rotary, cache[layer] if cache is not None else None)
        return self.lm_head(self.norm(x))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
