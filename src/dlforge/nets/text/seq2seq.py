"""The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al. 2017) for translation, with
the pre-norm blocks of later practice (Xiong et al. 2020: a final norm after each stack, no warmup-sensitive
post-norm). Source and target share one vocabulary and one embedding, which the output layer reuses (Press &
Wolf 2017), scaled by sqrt(dim) and added to sinusoidal positions, so any length decodes.

`encode(source)` reads the padded source once; `decode(tokens, memory, cache)` gives next-token logits, and
with a cache (per layer: the self-attention's keys and values so far, and the cross-attention's keys and
values of the memory, computed at the first step) each step runs only the new token. The blocks are the
shared ones of `dlforge.nets.layers`.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import nn

from dlforge.constraints import Positive, Probability
from dlforge.nets.layers.attention import KVCache
from dlforge.nets.layers.block import Block, DecoderBlock
from dlforge.nets.layers.norms import norm_layer
from dlforge.nets.layers.positions import sinusoids

Memory = tuple[torch.Tensor, torch.Tensor]  # the encoder's states (batch, length, dim), True at real tokens


class LayerCaches(list):
    """One cache (or tuple of caches) per layer, reordered together for beam search."""

    def select(self, rows: torch.Tensor) -> None:
        for layer in self:
            for cache in layer if isinstance(layer, tuple) else (layer,):
                cache.select(rows)


class Seq2SeqTransformer(nn.Module):
    """Source ids (batch, source_length) and target ids (batch, length) -> next-token logits (batch, length,
    vocab_size). `pad_id` pads sources (masked out) and `start_id` starts targets: the house tokenizers'
    pad and cls ids (`dlforge.data.tokenizers`)."""

    def __init__(
        self,
        vocab_size: int,
        encoder_depth: Annotated[int, Positive] = 3,
        decoder_depth: Annotated[int, Positive] = 3,
        heads: Annotated[int, Positive] = 4,
        dim: Annotated[int, Positive] = 128,
        mlp_ratio: Annotated[float, Positive] = 4.0,
        dropout: Annotated[float, Probability] = 0.1,
        bias: bool = True,
        pad_id: int = 0,
        start_id: int = 3,
    ):
        super().__init__()
        self.vocab_size, self.dim, self.pad_id, self.start_id = vocab_size, dim, pad_id, start_id
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        nn.init.normal_(self.embedding.weight, std=dim**-0.5)  # times sqrt(dim): unit-variance inputs
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout, bias) for _ in range(encoder_depth))
        self.encoder_norm = norm_layer("layernorm", dim, bias)
        self.decoder = nn.ModuleList(DecoderBlock(dim, heads, mlp_ratio, dropout, bias) for _ in range(decoder_depth))
        self.decoder_norm = norm_layer("layernorm", dim, bias)

    def _embed(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        positions = sinusoids(start + tokens.shape[1], self.dim, tokens.device)[start:]
        return self.drop(self.embedding(tokens) * math.sqrt(self.dim) + positions)

    def encode(self, source: torch.Tensor) -> Memory:
        mask = source != self.pad_id
        x = self._embed(source)
        for block in self.encoder:
            x = block(x, mask=mask[:, None, None, :])
        return self.encoder_norm(x), mask

    def new_cache(self) -> LayerCaches:
        return LayerCaches((KVCache(), KVCache()) for _ in self.decoder)

    def decode(self, tokens: torch.Tensor, memory: Memory, cache: LayerCaches | None = None) -> torch.Tensor:
        states, mask = memory
        x = self._embed(tokens, start=len(cache[0][0]) if cache is not None else 0)
        for layer, block in enumerate(self.decoder):
            x = block(x, states, mask, cache[layer] if cache is not None else None)
        return self.decoder_norm(x) @ self.embedding.weight.T  # tied output layer

    def cross_attention(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """`EncoderDecoder.cross_attention`: the last decoder layer's, averaged over its heads. The heads of one
        layer split the work (one may read the aligned word, another its neighbours or the source's eos), so
        one head alone often looks unlike an alignment while their mean reads as one."""
        states, mask = self.encode(source)
        x = self._embed(target)
        *before, last = self.decoder
        for block in before:
            x = block(x, states, mask)
        return last.cross_weights(x, states, mask).mean(1)

    def forward(self, source: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        if target is None:
            target = torch.full((len(source), 1), self.start_id, device=source.device)
        return self.decode(target, self.encode(source))
