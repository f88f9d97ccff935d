"""Transformer-XL (Dai et al. 2019): a causal language model that reads a long text segment by segment,
each segment attending to hidden states cached from the previous one.

- Segment-level recurrence: every layer attends over [memory; segment], where its memory holds that
  layer's inputs at the last `mem_len` positions before the segment, detached (no gradient flows back
  into the previous segment). Fed consecutive segments of a text, a token sees `mem_len` tokens before
  its segment at each layer, and up to `depth * mem_len` through the stack.
- Relative positions: absolute positions would restart at every segment, so attention depends on the
  distance between query i and key j instead. With R the sinusoidal encoding of a distance and u, v
  learned per head,
      score(i, j) = (q_i + u) . k_j  +  (q_i + v) . W_r R_(i-j)
                    content term        position term
  The content term is the `q . k` of `scaled_dot_product` (queries shifted by u); the position term,
  with the causal mask, is its additive float mask.
- Pre-norm blocks (the paper's are post-norm, like the original Transformer) and a tied output embedding.

As a `Decoder`: the cache (`new_cache()`) is the memory. `net(tokens, cache)` reads `tokens` as the
segment that follows the cached ones and moves the memory on; `recurrent = True` tells the causal-LM
objective to feed consecutive segments of a text through one cache. No `block_size`: a segment may be
any length, the memory carries the text before it.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from dlforge.constraints import NonNegative, ParameterError, Positive, Probability
from dlforge.nets.layers.attention import merge_heads, scaled_dot_product, split_heads
from dlforge.nets.layers.feedforward import MLP
from dlforge.nets.layers.init import normal_init
from dlforge.nets.layers.positions import relative_distances, sinusoids


class Memory:
    """Transformer-XL's cache: each layer's inputs at the last `mem_len` positions read so far, detached."""

    def __init__(self):
        self.layers: list[torch.Tensor] = []  # (batch, positions, dim) per layer; none before the first segment

    def __len__(self) -> int:
        return self.layers[0].shape[1] if self.layers else 0


class RelativeAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ParameterError("heads", f"{heads} does not divide dim={dim}; allowed: a divisor of {dim}")
        self.heads = heads
        self.query = nn.Linear(dim, dim, bias=False)
        self.key_value = nn.Linear(dim, 2 * dim, bias=False)
        self.position = nn.Linear(dim, dim, bias=False)  # W_r
        # u and v, one vector per head, stored flat: 1-d parameters get no weight decay (optim.param_groups)
        self.content_bias = nn.Parameter(torch.zeros(dim))
        self.position_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, positions: torch.Tensor, distance: torch.Tensor
    ) -> torch.Tensor:
        """x: (batch, length, dim) queries; context: (batch, past + length, dim) keys and values;
        positions: (past + length, dim) encodings of the distances; distance: (length, past + length)."""
        batch = x.shape[0]
        q = split_heads(self.query(x), self.heads)  # (batch, heads, length, head_dim)
        k, values = (split_heads(part, self.heads) for part in self.key_value(context).chunk(2, dim=-1))
        r = split_heads(self.position(positions), self.heads)  # (heads, distances, head_dim)
        # (heads, 1, head_dim): each head's vector, the same for every query
        u, v = (split_heads(bias[None], self.heads).to(q.dtype) for bias in (self.content_bias, self.position_bias))
        # The position term for every distance, then for each (query, key) pair the one of their distance.
        by_distance = (q + v) @ r.transpose(1, 2)  # (batch, heads, length, distances)
        position_scores = by_distance.gather(-1, distance.clamp(min=0).expand(batch, self.heads, -1, -1))
        mask = (position_scores * q.shape[-1] ** -0.5).masked_fill(distance < 0, float("-inf"))  # keys in the future
        out = scaled_dot_product(q + u, k, values, mask=mask)
        return self.dropout(self.proj(merge_heads(out)))


class Block(nn.Module):
    """Pre-norm block whose attention reads the layer's input over [memory; segment]."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = RelativeAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout)

    def forward(self, context: torch.Tensor, positions: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
        """The block's output over the segment, the last `distance.shape[0]` positions of `context`."""
        length = distance.shape[0]
        normed = self.norm1(context)
        x = context[:, -length:] + self.attn(normed[:, -length:], normed, positions, distance)
        return x + self.mlp(self.norm2(x))


class TransformerXL(nn.Module):
    recurrent = True
    block_size = None  # segments of any length

    def __init__(
        self,
        vocab_size: int,
        dim: Annotated[int, Positive] = 128,
        depth: Annotated[int, Positive] = 4,
        heads: Annotated[int, Positive] = 4,
        mlp_ratio: Annotated[float, Positive] = 4.0,
        dropout: Annotated[float, Probability] = 0.0,
        # cached positions per layer; 0: no memory, every segment read on its own
        mem_len: Annotated[int, NonNegative] = 64,
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.dim = dim
        self.mem_len = mem_len
        self.embedding = nn.Embedding(vocab_size, dim)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.apply(normal_init)
        self.head.weight = self.embedding.weight  # tied input and output embeddings

    def new_cache(self) -> Memory:
        return Memory()

    def forward(self, tokens: torch.Tensor, cache: Memory | None = None) -> torch.Tensor:
        """tokens: (batch, length) -> logits (batch, length, vocab_size). With a cache, `tokens` follow the
        text read into it so far, and the cache moves on to hold the memory for the next segment."""
        length = tokens.shape[1]
        memory = cache.layers if cache is not None else []
        past = len(cache) if cache is not None else 0
        distance = relative_distances(length, past, tokens.device)  # query i sits at position past + i
        positions = sinusoids(past + length, self.dim, tokens.device)
        x = self.dropout(self.embedding(tokens))
        next_memory = []
        for layer, block in enumerate(self.blocks):
            context = torch.cat([memory[layer], x], dim=1) if memory else x
            next_memory.append(context[:, max(0, context.shape[1] - self.mem_len) :].detach())
            x = block(context, positions, distance)
        if cache is not None:
            cache.layers = next_memory
        return self.head(self.norm(x))
