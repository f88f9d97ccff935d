"""The RNN-era translation model: a bidirectional GRU encoder and a GRU decoder that attends to the
encoder's states (Bahdanau et al. 2015; dot-product attention and an attentional output layer as Luong et
al. 2015, without input feeding, so that training reads the whole target in one GRU call).

The decoder's cache is its GRU state and the attention's keys and values of the memory; one embedding
serves source, target and (tied) the output layer, as in the Transformer of `seq2seq`.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from dlforge.constraints import Positive, Probability
from dlforge.nets.layers.attention import CrossAttention, KVCache
from dlforge.nets.text.rnn import recur, reversed_steps

Memory = tuple[torch.Tensor, torch.Tensor]


class GRUCache:
    """The decoder's GRU state (depth, batch, dim), None before the first step, and the attention's cache."""

    def __init__(self):
        self.state: torch.Tensor | None = None
        self.attention = KVCache()

    def select(self, rows: torch.Tensor) -> None:
        self.state = self.state[:, rows]
        self.attention.select(rows)


class GRUSeq2Seq(nn.Module):
    """Source ids (batch, source_length) and target ids (batch, length) -> next-token logits (batch, length,
    vocab_size). `pad_id`, `start_id`: as `Seq2SeqTransformer`'s."""

    def __init__(
        self,
        vocab_size: int,
        dim: Annotated[int, Positive] = 256,  # embeddings, decoder state and each encoder direction
        depth: Annotated[int, Positive] = 1,  # stacked GRU layers, in the encoder and the decoder
        dropout: Annotated[float, Probability] = 0.1,
        pad_id: int = 0,
        start_id: int = 3,
    ):
        super().__init__()
        self.vocab_size, self.pad_id, self.start_id = vocab_size, pad_id, start_id
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        between_layers = dropout if depth > 1 else 0.0  # torch warns about dropout after a single layer
        self.forward_reader, self.backward_reader, self.decoder = (
            nn.GRU(dim, dim, num_layers=depth, batch_first=True, dropout=between_layers) for _ in range(3)
        )
        self.bridge = nn.Linear(2 * dim, depth * dim)  # the mean encoder state -> the decoder's first state
        self.attention = CrossAttention(dim, heads=1, memory_dim=2 * dim)
        self.output = nn.Linear(2 * dim, dim)  # [state, context] -> the attentional state
        self.drop = nn.Dropout(dropout)

    def encode(self, source: torch.Tensor) -> Memory:
        mask = source != self.pad_id
        lengths = mask.sum(1).clamp(min=1)
        steps = self.drop(self.embedding(source))
        forward = recur(self.forward_reader, steps)[0]
        backward = reversed_steps(recur(self.backward_reader, reversed_steps(steps, lengths))[0], lengths)
        return self.drop(torch.cat([forward, backward], dim=-1)), mask

    def new_cache(self) -> GRUCache:
        return GRUCache()

    def decode(self, tokens: torch.Tensor, memory: Memory, cache: GRUCache | None = None) -> torch.Tensor:
        states, mask = memory
        outputs, state = self._recur(tokens, memory, cache.state if cache is not None else None)
        context = self.attention(outputs, states, mask, cache.attention if cache is not None else None)
        if cache is not None:
            cache.state = state
        attentional = self.drop(torch.tanh(self.output(torch.cat([outputs, context], dim=-1))))
        return attentional @ self.embedding.weight.T  # tied output layer

    def cross_attention(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """`EncoderDecoder.cross_attention`: the attention's weights (one head)."""
        memory = self.encode(source)
        outputs, _ = self._recur(target, memory)
        return self.attention.weights(outputs, *memory)[:, 0]

    def _recur(
        self, tokens: torch.Tensor, memory: Memory, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder GRU's outputs for `tokens` (batch, length, dim) and its last state, from `state` (None: the
        first step's, made from the mean encoder state)."""
        if state is None:
            states, mask = memory
            mean = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            state = torch.tanh(self.bridge(mean)).unflatten(-1, (self.decoder.num_layers, -1)).transpose(0, 1)
        return recur(self.decoder, self.drop(self.embedding(tokens)), state.contiguous())

    def forward(self, source: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        if target is None:
            target = torch.full((len(source), 1), self.start_id, device=source.device)
        return self.decode(target, self.encode(source))
