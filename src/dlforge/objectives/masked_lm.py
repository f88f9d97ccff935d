"""Masked language modelling (BERT, Devlin et al. 2018) on any encoder exposing `hidden_states(tokens)`,
`vocab_size` and `out_features`.

`mask_fraction` (15 %) of the text tokens of each window are selected; a selected token is replaced by
the mask token with probability 0.8, by a random token with 0.1 and left unchanged with 0.1, and the
loss is the cross-entropy of the original tokens at the selected positions only. `masking`:
- static (BERT): an example's mask is fixed, drawn from a generator seeded by the example's tokens, so
  an example seen again gets the same mask (with `data.ordering=contiguous` every epoch repeats the same
  windows; random windows are new examples each time);
- dynamic (RoBERTa): a fresh mask every time an example is seen.
Validation and test always use static masks, so their numbers compare across epochs, runs and modes.
Logs `{train,val,test}/loss` and `/acc`, the accuracy over the selected tokens.
"""

from __future__ import annotations

import zlib
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from dlforge.objectives.base import Freeze, Objective, OptimizerFactory, SchedulerFactory
from dlforge.objectives.metrics import EpochAccuracy, log_train_loss
from dlforge.data.tokenizers import SPECIAL_TOKENS, Tokenizer

FIRST_TEXT_ID = len(SPECIAL_TOKENS)  # ids below are pad, unk, mask, cls, eos: never selected nor drawn


class MaskedLM(Objective):
    default_monitor = ("val/loss", "min")  # used when the config's `monitor` is null

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
    ):
        super().__init__(net, optimizer, scheduler, pretrained, freeze)
        if not 0 < mask_fraction < 1:
            raise ValueError(f"mask_fraction must be in (0, 1), got {mask_fraction}")
        embedding = getattr(net, "token_embedding", None) if tie_weights else None
        if tie_weights and (embedding is None or embedding.embedding_dim != net.out_features):
            raise ValueError(f"tie_weights needs a net with a token_embedding of width {net.out_features}")
        # A linear decoder on the encoder's final norm. BERT's extra dense-GELU-LayerNorm transform before
        # it, and tying its weight to the token embedding, both slowed char-level learning here.
        self.head = nn.Linear(net.out_features, net.vocab_size)
        if embedding is not None:
            self.head.weight = embedding.weight
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


def _static_draws(tokens: torch.Tensor) -> torch.Tensor:
    """Three uniforms per token (select?, which replacement?, random token) that depend only on the
    window's tokens: each window seeds its own generator with a checksum of its ids."""
    rows = tokens.cpu().numpy()
    draws = [torch.rand(rows.shape[1], 3, generator=torch.Generator().manual_seed(zlib.crc32(row.tobytes()))) for row in rows]
    return torch.stack(draws).to(tokens.device)
