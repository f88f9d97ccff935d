"""Masked language modelling (BERT, Devlin et al. 2018) on any `TokenEncoder` (one vector per token from
`hidden_states(tokens)`).

`mask_fraction` (15 %) of the text tokens of each window are selected; a selected token is replaced by
the mask token with probability 0.8, by a random token with 0.1 and left unchanged with 0.1, and the
loss is the cross-entropy of the original tokens at the selected positions only. `masking`:
- static (BERT): an example's mask is fixed, drawn from a generator seeded by the example's tokens, so
  an example seen again gets the same mask (with `data.ordering=contiguous` every epoch repeats the same
  windows; random windows are new examples each time);
- dynamic (RoBERTa): a fresh mask every time an example is seen.
Validation and test always use static masks, so their numbers compare across epochs, runs and modes.
Logs `{train,val,test}/loss` and `/acc`, the accuracy over the selected tokens. Its sample media show
test windows with the selected tokens marked: as the encoder read them, as it predicted them and as
they were.
"""

from __future__ import annotations

import zlib
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from dlforge.data.tokenizers import SPECIAL_TOKENS, Tokenizer
from dlforge.errors import ConfigError
from dlforge.nets.contracts import TokenEncoder
from dlforge.objectives.base import Freeze, Objective, OptimizerFactory, SchedulerFactory
from dlforge.objectives.media import Media, Table
from dlforge.objectives.metrics import EpochAccuracy, log_train_loss

FIRST_TEXT_ID = len(SPECIAL_TOKENS)  # ids below are pad, unk, mask, cls, eos: never selected nor drawn


class MaskedLM(Objective):
    net_contract = TokenEncoder
    default_monitor = ("val/loss", "min")

    def __init__(
        self,
        net: nn.Module,
        masking: Literal["static", "dynamic"] = "dynamic",
        mask_fraction: float = 0.15,
        tie_weights: bool = False,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        pretrained: str | None = None,
        freeze: Freeze = "none",
        compile: bool = False,
    ):
        super().__init__(net, optimizer, scheduler, pretrained, freeze, compile)
        if not 0 < mask_fraction < 1:
            raise ConfigError(f"model.mask_fraction={mask_fraction}: must be between 0 and 1")
        if tie_weights and net.token_embedding.embedding_dim != net.out_features:
            raise ConfigError(
                f"model.tie_weights=true: the token embedding is {net.token_embedding.embedding_dim} wide, "
                f"the encoder's output {net.out_features}"
            )
        # A linear decoder on the encoder's final norm. BERT's extra dense-GELU-LayerNorm transform before
        # it, and tying its weight to the token embedding, both slowed char-level learning here.
        self.head = nn.Linear(net.out_features, net.vocab_size)
        if tie_weights:
            self.head.weight = net.token_embedding.weight
        self.masking = masking
        self.mask_fraction = mask_fraction
        self.train_acc = EpochAccuracy()
        self.val_acc = MulticlassAccuracy(net.vocab_size, average="micro")
        self.test_acc = MulticlassAccuracy(net.vocab_size, average="micro")
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()

    def forward(self, inputs: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
        """Logits over the vocabulary at the selected positions only: (number selected, vocab_size)."""
        return self.head(self.net.hidden_states(inputs)[selected])

    # Masking lives here, not in the data: any token-window data then serves, and static/dynamic is part
    # of the model's recipe (model.masking), applied on the batch's device.
    def mask(self, tokens: torch.Tensor, static: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(corrupted inputs, selected positions) for a batch of token windows, by the 80/10/10 rule."""
        draws = _static_draws(tokens) if static else torch.rand(*tokens.shape, 3, device=tokens.device)
        select, action, replacement = draws.unbind(-1)
        selected = (select < self.mask_fraction) & (tokens >= FIRST_TEXT_ID)
        random_tokens = FIRST_TEXT_ID + (replacement * (self.net.vocab_size - FIRST_TEXT_ID)).long()
        inputs = torch.where(selected & (action < 0.8), Tokenizer.mask_id, tokens)
        inputs = torch.where(selected & (action >= 0.8) & (action < 0.9), random_tokens, inputs)
        return inputs, selected

    def training_step(self, batch, batch_idx):
        tokens = batch[0]  # language-model batches are (inputs, next tokens): the windows are the inputs
        inputs, selected = self.mask(tokens, static=self.masking == "static")
        logits = self(inputs, selected)
        loss = F.cross_entropy(logits, tokens[selected])
        self.train_acc.update(logits, tokens[selected])
        log_train_loss(self, loss)
        return loss

    def on_train_epoch_end(self):
        self.log("train/acc", self.train_acc)  # computed over the epoch, then reset

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch[0], self.val_loss, self.val_acc, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch[0], self.test_loss, self.test_acc, "test")

    def _evaluate(self, tokens: torch.Tensor, loss_metric: MeanMetric, accuracy: MulticlassAccuracy, split: str):
        inputs, selected = self.mask(tokens, static=True)
        logits = self(inputs, selected)
        targets = tokens[selected]
        loss_metric.update(F.cross_entropy(logits, targets), weight=targets.numel())
        accuracy.update(logits, targets)
        self.log(f"{split}/loss", loss_metric, prog_bar=True)
        self.log(f"{split}/acc", accuracy, prog_bar=True)

    def sample_media(self, batch, tokenizer: Tokenizer | None) -> list[Media]:
        if tokenizer is None:
            return []
        tokens = batch[0]
        inputs, selected = self.mask(tokens, static=True)  # the test's own masks
        predicted = tokens.masked_scatter(selected, self(inputs, selected).argmax(-1))
        rows = [
            [_bracketed(tokenizer, texts, where) for texts in (read, guessed, true)]
            for read, guessed, true, where in zip(inputs, predicted, tokens, selected)
        ]
        return [Table("test/masked_samples", ["input", "predicted", "true"], rows)]


def _static_draws(tokens: torch.Tensor) -> torch.Tensor:
    """Three uniforms per token (select?, which replacement?, random token) that depend only on the
    window's tokens: each window seeds its own generator with a checksum of its ids."""
    rows = tokens.cpu().numpy()
    draws = [
        torch.rand(rows.shape[1], 3, generator=torch.Generator().manual_seed(zlib.crc32(row.tobytes()))) for row in rows
    ]
    return torch.stack(draws).to(tokens.device)


def _bracketed(tokenizer: Tokenizer, tokens: torch.Tensor, selected: torch.Tensor) -> str:
    """The window's text with each selected token in white square brackets, which code and prose seldom use,
    and special tokens (the mask) by name."""
    pieces = [
        SPECIAL_TOKENS[token] if token < FIRST_TEXT_ID else tokenizer.decode([token]) for token in tokens.tolist()
    ]
    return "".join(f"⟦{piece}⟧" if chosen else piece for piece, chosen in zip(pieces, selected.tolist()))
