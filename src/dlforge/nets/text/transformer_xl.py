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

`recurrent = True` tells the causal-LM objective to call `logits, memory = net(tokens, memory)` and to
carry the memory over consecutive batches of a contiguous token stream (`memory=None` starts afresh).
"""

from __future__ import annotations

import torch
from torch import nn

from dlforge.nets.layers.attention import MLP, scaled_dot_product


def sinusoids(count: int, dim: int, device: torch.device) -> torch.Tensor:
    """The sinusoidal encodings (Vaswani et al. 2017) of distances 0 .. count - 1: (count, dim)."""
    inverse_frequency = 1.0 / 10000 ** (torch.arange(0, dim, 2, device=device) / dim)
    angles = torch.arange(count, device=device)[:, None] * inverse_frequency
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class RelativeAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
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
        batch, length, dim = x.shape
        head_dim = dim // self.heads
        q = self.query(x).view(batch, length, self.heads, head_dim).transpose(1, 2)  # (batch, heads, length, head_dim)
        k, values = self.key_value(context).view(batch, -1, 2, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        r = self.position(positions).view(-1, self.heads, head_dim).transpose(0, 1)  # (heads, distances, head_dim)
        u, v = (bias.view(self.heads, 1, head_dim).to(q.dtype) for bias in (self.content_bias, self.position_bias))
        # The position term for every distance, then for each (query, key) pair the one of their distance.
        by_distance = (q + v) @ r.transpose(1, 2)  # (batch, heads, length, distances)
        position_scores = by_distance.gather(-1, distance.clamp(min=0).expand(batch, self.heads, -1, -1))
        mask = (position_scores * head_dim**-0.5).masked_fill(distance < 0, float("-inf"))  # keys in the future
        out = scaled_dot_product(q + u, k, values, mask=mask)
        return self.dropout(self.proj(out.transpose(1, 2).reshape(batch, length, dim)))


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

    def __init__(
        self,
        vocab_size: int,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        mem_len: int = 64,  # cached positions per layer; 0: no memory, every segment read on its own
    ):
        super().__init__()
        self.dim = dim
        self.mem_len = mem_len
        self.embedding = nn.Embedding(vocab_size, dim)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.apply(_init_weights)
        self.head.weight = self.embedding.weight  # tied input and output embeddings

    def forward(
        self, tokens: torch.Tensor, memory: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens: (batch, length); memory: (depth, batch, past, dim) from the previous segment, or None.
        Returns logits (batch, length, vocab_size) and the memory for the next segment."""
        length = tokens.shape[1]
        past = 0 if memory is None else memory.shape[2]
        # Query i sits at position past + i of [memory; segment]; a negative distance is a future key.
        steps = torch.arange(past + length, device=tokens.device)
        distance = steps[past:, None] - steps[None, :]  # (length, past + length)
        positions = sinusoids(past + length, self.dim, tokens.device)
        x = self.dropout(self.embedding(tokens))
        next_memory = []
        for layer, block in enumerate(self.blocks):
            context = x if memory is None else torch.cat([memory[layer], x], dim=1)
            next_memory.append(context[:, max(0, context.shape[1] - self.mem_len) :].detach())
            x = block(context, positions, distance)
        return self.head(self.norm(x)), torch.stack(next_memory)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
