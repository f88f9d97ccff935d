"""A decoder-only Transformer language model, readable top to bottom like nanoGPT, in two styles:

gpt2:  LayerNorm, learned absolute position embeddings, GELU MLP (Radford et al. 2019).
llama: RMSNorm, rotary position embeddings (Su et al. 2021), SwiGLU MLP (Touvron et al. 2023).

Both tie the token embedding to the output layer. `forward(tokens, cache)` with a KV cache (one
`KVCache` per layer, from `new_cache()`) runs only the new tokens, attending to the keys and values
cached for the earlier ones: generation then costs one position per token instead of the whole context.
The blocks (attention, MLP/SwiGLU, norms) are the shared ones of `dlforge.nets.layers`.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Optional

import torch
from torch import nn

from dlforge.constraints import Positive, Probability
from dlforge.nets.layers.attention import KVCache
from dlforge.nets.layers.block import Block
from dlforge.nets.layers.init import normal_init
from dlforge.nets.layers.norms import norm_layer
from dlforge.nets.layers.positions import LearnedPositions, rotary_tables


class GPT(nn.Module):
    """Token ids (batch, length) -> next-token logits (batch, length, vocab_size), length <= block_size."""

    recurrent = False  # each call reads its tokens on their own; a cache only saves recomputing them

    def __init__(
        self,
        vocab_size: int,
        block_size: Annotated[int, Positive] = 64,
        depth: Annotated[int, Positive] = 4,
        heads: Annotated[int, Positive] = 4,
        dim: Annotated[int, Positive] = 128,
        dropout: Annotated[float, Probability] = 0.0,
        bias: bool = False,
        arch: Literal["gpt2", "llama"] = "gpt2",
        mlp_ratio: Annotated[float, Positive] = 4.0,
        head_dim: Optional[Annotated[int, Positive]] = None,
    ):
        super().__init__()
        self.arch = arch
        self.vocab_size = vocab_size
        self.block_size = block_size
        norm, mlp = ("layernorm", "gelu") if arch == "gpt2" else ("rmsnorm", "swiglu")
        self.wte = nn.Embedding(vocab_size, dim)
        if arch == "gpt2":
            self.wpe = LearnedPositions(block_size, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio, dropout, bias, norm=norm, mlp=mlp, head_dim=head_dim) for _ in range(depth)
        )
        if arch == "llama":  # rotary tables, one rotation per head width: derived, so not saved in checkpoints
            cos, sin = rotary_tables(self.blocks[0].attn.head_dim, block_size)
            self.register_buffer("rotary_cos", cos, persistent=False)
            self.register_buffer("rotary_sin", sin, persistent=False)
        self.norm = norm_layer(norm, dim, bias)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying (Press & Wolf 2017)
        self.apply(normal_init)
        for name, parameter in self.named_parameters():
            if name.endswith("proj.weight"):  # GPT-2: residual projections scaled down with depth
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * depth))

    def new_cache(self) -> list[KVCache]:
        return [KVCache() for _ in self.blocks]

    def forward(self, tokens: torch.Tensor, cache: list[KVCache] | None = None) -> torch.Tensor:
        """Logits for every position of `tokens`; with a cache, `tokens` continue the tokens cached so far."""
        start = len(cache[0]) if cache is not None else 0
        end = start + tokens.shape[1]
        if end > self.block_size:
            raise ValueError(f"{end} positions exceed block_size {self.block_size}")
        x = self.wte(tokens)
        rotary = None
        if self.arch == "gpt2":
            x = x + self.wpe(start, end)
        else:
            rotary = (self.rotary_cos[start:end], self.rotary_sin[start:end])
        x = self.drop(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, causal=True, rotary=rotary, cache=cache[layer] if cache is not None else None)
        return self.lm_head(self.norm(x))
