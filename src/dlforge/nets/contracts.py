"""What objectives and tasks need from a network, as Protocols: a net satisfies one by having its members
(no base class to inherit), and `isinstance(net, Decoder)` checks that it has them.

- `Backbone`: one feature vector per example; a classification head goes on it (CNN, ViT, RNN,
  TransformerEncoder).
- `TokenEncoder`: a Backbone over token ids that also gives one vector per token and its token
  embedding; masked-LM pretraining predicts from those vectors (TransformerEncoder).
- `Decoder`: next-token logits, with a cache carrying earlier tokens; causal-LM training and text
  generation use it (GPT in both archs, TransformerXL).
- `EncoderDecoder`: a target sequence's next-token logits given a source sequence it reads whole, with a
  cache for step-by-step decoding; sequence-to-sequence training and translation use it (the encoder-decoder
  Transformer, the GRU with attention).
- `Detector`: torchvision's detection convention, losses in training and boxes in eval; the detection
  objective trains any of them (the YOLO-style net, torchvision's FCOS and Mask R-CNN on our backbone).
- `PixelClassifier`: class logits for every pixel; semantic segmentation trains it (UNet).
- `FrameClassifier`: class logits for every frame of a waveform; CTC speech recognition trains it (ConvBiGRU).
- `DualEncoder`: images and texts embedded in one space; contrastive text-image training (CLIP) trains it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn


@runtime_checkable
class Backbone(Protocol):
    out_features: int

    def forward(self, inputs: Tensor, /) -> Tensor:
        """(batch, ...) inputs -> (batch, out_features) features."""
        ...


@runtime_checkable
class TokenEncoder(Backbone, Protocol):
    vocab_size: int
    token_embedding: nn.Embedding

    def hidden_states(self, tokens: Tensor) -> Tensor:
        """(batch, length) token ids -> (batch, length, out_features)."""
        ...


@runtime_checkable
class Decoder(Protocol):
    vocab_size: int
    block_size: int | None  # most positions one call may hold; None: unbounded (a memory carries the rest)
    recurrent: bool  # True: the cache carries context from one segment of a text to the next
    # (Transformer-XL): training feeds consecutive segments through one cache

    def new_cache(self) -> Any:
        """An empty state for a new batch of sequences."""
        ...

    def forward(self, tokens: Tensor, cache: Any | None = None) -> Tensor:
        """(batch, length) token ids -> logits (batch, length, vocab_size). With a cache, `tokens`
        continue the cached ones and the cache is updated in place (a KV cache grows; Transformer-XL's
        memory moves on, detached)."""
        ...


@runtime_checkable
class EncoderDecoder(Protocol):
    vocab_size: int  # source and target share one vocabulary

    def encode(self, source: Tensor) -> tuple[Tensor, Tensor]:
        """(batch, source_length) token ids, padded with id 0 -> the memory the decoder reads: states
        (batch, source_length, width) and a mask (batch, source_length), True at the real tokens."""
        ...

    def new_cache(self) -> Any:
        """An empty decoding state; `cache.select(rows)` keeps its rows `rows` (beam search reorders it)."""
        ...

    def decode(self, tokens: Tensor, memory: tuple[Tensor, Tensor], cache: Any | None = None) -> Tensor:
        """(batch, length) target token ids -> next-token logits (batch, length, vocab_size), reading the
        memory. With a cache, `tokens` continue the cached ones and the cache is updated in place."""
        ...

    def cross_attention(self, source: Tensor, target: Tensor) -> Tensor:
        """How the decoder reads the source while `decode(target, encode(source))` predicts each next token:
        weights (batch, target_length, source_length), each row a distribution over the real source tokens
        (zero on padding). Computed explicitly for pictures (attention maps); training never materialises them."""
        ...

    def forward(self, source: Tensor, target: Tensor | None = None) -> Tensor:
        """`decode(target, encode(source))`; target None: the start token alone (decoding's first step)."""
        ...


@runtime_checkable
class Detector(Protocol):
    num_classes: int  # object categories K, labelled 1..K (0 is never an object: nets handle background)
    predicts_masks: bool  # True: eval outputs carry instance `masks` too (Mask R-CNN)

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None) -> Any:
        """(batch, 3, height, width) images in [0, 1] (not normalised). Training mode, with `targets` (per
        image `boxes` (n, 4) xyxy pixels, `labels` (n,) in 1..K, `masks` (n, height, width)): a dict of scalar
        losses, which the objective sums. Eval mode: per image a dict of `boxes` (m, 4) xyxy, `scores` (m,),
        `labels` (m,) in 1..K and, when `predicts_masks`, `masks` (m, 1, height, width) probabilities."""
        ...


@runtime_checkable
class PixelClassifier(Protocol):
    num_classes: int  # classes of a pixel, background included
    size_divisor: int  # an input's height and width must be multiples of it (the objective pads them)

    def forward(self, images: Tensor, /) -> Tensor:
        """(batch, 3, height, width) images in [0, 1] -> (batch, num_classes, height, width) logits."""
        ...


@runtime_checkable
class FrameClassifier(Protocol):
    vocab_size: int  # classes of a frame, the CTC blank (0) included
    sample_rate: int  # of the waveforms it takes, in Hz

    def forward(self, waves: Tensor, lengths: Tensor | None = None, /) -> tuple[Tensor, Tensor]:
        """(batch, samples) waveforms at `sample_rate`, right-padded, and each one's samples (None: all) ->
        (batch, frames, vocab_size) logits and each one's frames."""
        ...


@runtime_checkable
class DualEncoder(Protocol):
    embed_dim: int  # width of the shared space

    def image_features(self, images: Tensor) -> Tensor:
        """(batch, channels, height, width) images -> (batch, features): the image tower's output, before its
        projection into the shared space (what a linear probe reads)."""
        ...

    def project_image(self, features: Tensor) -> Tensor:
        """(batch, features) image features -> (batch, embed_dim) embeddings, not normalised."""
        ...

    def encode_text(self, tokens: Tensor) -> Tensor:
        """(batch, length) token ids, padded with 0 -> (batch, embed_dim) embeddings, not normalised."""
        ...
