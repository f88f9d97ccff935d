"""Bidirectional Transformer encoder (BERT, Devlin et al. 2018; RoBERTa, Liu et al. 2019): token and
learned position embeddings, pre-norm blocks in which every token attends to every non-pad token, a
final norm. `hidden_states` gives one vector per token (masked LM), `forward` one per sequence
(classification), pooled from the leading cls token or averaged over the non-pad tokens."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

import torch
from torch import nn

from dlforge.constraints import Positive, Probability
from dlforge.nets.layers.block import Block
from dlforge.nets.layers.positions import LearnedPositions


class TransformerEncoder(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        max_length: Annotated[int, Positive] = 128,
        dim: Annotated[int, Positive] = 128,
        depth: Annotated[int, Positive] = 4,
        heads: Annotated[int, Positive] = 4,
        mlp_ratio: Annotated[float, Positive] = 4.0,
        dropout: Annotated[float, Probability] = 0.0,
        pad_id: int = 0,
        pooling: Literal["cls", "mean"] = "mean",
        head_dim: Optional[Annotated[int, Positive]] = None,
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.pad_id = pad_id
        self.pooling = pooling
        # PyTorch's default initialisation throughout: BERT's N(0, 0.02) learnt several times slower here.
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.position_embedding = LearnedPositions(max_length, dim)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout, head_dim=head_dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.out_features = dim

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """(batch, length) token ids -> (batch, length, dim); pad tokens are never attended to."""
        length = tokens.shape[1]
        if length > self.max_length:
            raise ValueError(f"sequence length {length} exceeds the encoder's max_length {self.max_length}")
        mask = (tokens != self.pad_id)[:, None, None, :]  # (batch, heads, queries, keys), True = attend
        x = self.dropout(self.token_embedding(tokens) + self.position_embedding(0, length))
        for block in self.blocks:
            x = block(x, mask=mask)
        return self.norm(x)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(batch, length) token ids -> (batch, dim) sequence vectors."""
        hidden = self.hidden_states(tokens)
        if self.pooling == "cls":
            return hidden[:, 0]
        keep = (tokens != self.pad_id).unsqueeze(-1).to(hidden.dtype)
        return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1)
