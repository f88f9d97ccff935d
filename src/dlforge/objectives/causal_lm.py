"""Causal language modelling: predict every next token with cross-entropy, for any network that maps
token ids (batch, length) to logits (batch, length, vocab).

A network with memory across segments (`net.recurrent = True`: Transformer-XL, RNNs) is called as
`logits, memory = net(inputs, memory)`. The objective carries the memory, detached, from each batch to
the next batch of the same stage (train, val, test) and starts every epoch without. With
`data.ordering=contiguous`, where each batch row continues the same row of the previous batch, that is
Transformer-XL's training scheme (truncated backpropagation through time).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from dlforge.objectives.base import Freeze, Objective, OptimizerFactory, SchedulerFactory
from dlforge.objectives.media import Media, Table
from dlforge.objectives.metrics import log_train_loss


class CausalLM(Objective):
    """Logs `train/loss` and, for val and test, `loss` (nats per token), `ppl` (perplexity),
    `bits_per_token` and, when the datamodule states its `chars_per_token`, `bpc` (bits per character
    of the split; for a char tokenizer the same as bits per token)."""

    default_monitor = ("val/loss", "min")  # used when the config's `monitor` is null

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        pretrained: str | None = None,
        freeze: Freeze = "none",
    ):
        super().__init__(net, optimizer, scheduler, pretrained, freeze)
        self.memory: dict[str, Any] = {}  # stage -> a recurrent net's memory after the previous batch
        self.eval_metrics = nn.ModuleDict({stage: self._derived_metrics(MeanMetric()) for stage in ("val", "test")})

    @staticmethod
    def _derived_metrics(loss: MeanMetric) -> nn.ModuleDict:
        # Metrics computed from the (DDP-synced) mean loss, so they are exact over all the data.
        return nn.ModuleDict({"loss": loss, "ppl": math.e**loss, "bits_per_token": loss / math.log(2)})

    def setup(self, stage: str) -> None:
        super().setup(stage)
        chars_per_token = getattr(self.trainer.datamodule, "chars_per_token", None) or {}
        for split, metrics in self.eval_metrics.items():
            if split in chars_per_token:
                metrics["bpc"] = metrics["loss"] / (math.log(2) * chars_per_token[split])

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)

    def training_step(self, batch, batch_idx):
        loss = self._loss("train", *batch)
        log_train_loss(self, loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self._evaluate("val", batch)

    def test_step(self, batch, batch_idx):
        self._evaluate("test", batch)

    def on_train_epoch_start(self) -> None:
        self.memory.pop("train", None)

    def on_validation_epoch_start(self) -> None:
        self.memory.pop("val", None)

    def on_test_epoch_start(self) -> None:
        self.memory.pop("test", None)

    def _loss(self, stage: str, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if getattr(self.net, "recurrent", False):
            logits, memory = self.net(inputs, self.memory.get(stage))
            self.memory[stage] = _detached(memory)  # gradients stop at the segment boundary
        else:
            logits = self.net(inputs)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def _evaluate(self, stage: str, batch) -> None:
        inputs, targets = batch
        metrics = self.eval_metrics[stage]
        metrics["loss"].update(self._loss(stage, inputs, targets), weight=targets.numel())
        for name, metric in metrics.items():
            self.log(f"{stage}/{name}", metric, prog_bar=name == "loss")

    def sample_media(self, batch, tokenizer: Any | None) -> list[Media]:
        """Each input window beside the model's next-token predictions (greedy, every position)."""
        if tokenizer is None or getattr(self.net, "recurrent", False):
            return []
        inputs, targets = batch
        predicted = self(inputs).argmax(-1)
        rows = [[tokenizer.decode(row.tolist()) for row in texts] for texts in zip(inputs, predicted, targets)]
        return [Table("test/text_samples", ["input", "predicted", "true"], rows)]


def _detached(memory: Any) -> Any:
    """The memory with every tensor in it detached; it may be a tensor or nested tuples/lists of them."""
    if isinstance(memory, torch.Tensor):
        return memory.detach()
    if isinstance(memory, (tuple, list)):
        return type(memory)(_detached(item) for item in memory)
    return memory
