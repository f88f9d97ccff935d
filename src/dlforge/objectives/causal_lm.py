"""Causal language modelling: predict every next token with cross-entropy, for any `Decoder` network
(token ids (batch, length) -> logits (batch, length, vocab)).

A recurrent decoder (`net.recurrent`: Transformer-XL) carries context from one segment of a text to the
next in its cache. The objective keeps one cache per stage (train, val, test), fresh from
`net.new_cache()` at the start of every epoch of that stage, and feeds each batch through it; the net
keeps it detached, so gradients stop at the segment boundary. With `data.ordering=contiguous`, where
each batch row continues the same row of the previous batch, that is Transformer-XL's training scheme
(truncated backpropagation through time). Other decoders read each batch on its own.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from dlforge.data.tokenizers import Tokenizer
from dlforge.nets.contracts import Decoder
from dlforge.objectives.base import Freeze, Objective, OptimizerFactory, SchedulerFactory
from dlforge.objectives.decoding import generate
from dlforge.objectives.media import Media, Table
from dlforge.objectives.metrics import log_train_loss


@runtime_checkable
class CharacterCountedData(Protocol):
    """A datamodule that knows how many characters of text a token stands for, on average per split."""

    chars_per_token: dict[str, float]


TRAIN_CACHE = "train_cache"  # the checkpoint key of a recurrent net's training memory
GENERATED_SAMPLES, PROMPT_TOKENS, GENERATED_TOKENS = 4, 32, 160  # the text shown at the end of testing


class CausalLM(Objective):
    """Logs `train/loss` and, for val and test, `loss` (nats per token), `ppl` (perplexity),
    `bits_per_token` and, when the datamodule states its `chars_per_token`, `bpc` (bits per character
    of the split; for a char tokenizer the same as bits per token)."""

    net_contract = Decoder
    default_monitor = ("val/loss", "min")

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        pretrained: str | None = None,
        freeze: Freeze = "none",
        compile: bool = False,
    ):
        super().__init__(net, optimizer, scheduler, pretrained, freeze, compile)
        self.caches: dict[str, Any] = {}  # stage -> a recurrent net's cache, carried from batch to batch
        self.restored_cache: dict[str, int] | None = None  # the epoch of a training cache a checkpoint brought
        self.eval_metrics = nn.ModuleDict({stage: self._derived_metrics(MeanMetric()) for stage in ("val", "test")})

    @staticmethod
    def _derived_metrics(loss: MeanMetric) -> nn.ModuleDict:
        # Metrics computed from the (DDP-synced) mean loss, so they are exact over all the data.
        return nn.ModuleDict({"loss": loss, "ppl": math.e**loss, "bits_per_token": loss / math.log(2)})

    def setup(self, stage: str) -> None:
        super().setup(stage)
        data = self.trainer.datamodule
        chars_per_token = data.chars_per_token if isinstance(data, CharacterCountedData) else {}
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
        self._start_reading("train")

    def on_validation_epoch_start(self) -> None:
        self._start_reading("val")

    def on_test_epoch_start(self) -> None:
        self._start_reading("test")

    def _start_reading(self, stage: str) -> None:
        if stage == "train":
            restored, self.restored_cache = self.restored_cache, None
            if restored is not None and restored["epoch"] == self.current_epoch:
                return  # resumed mid-epoch: the rows go on where they stopped, with the memory they had then
        self.caches.pop(stage, None)  # a recurrent net starts the epoch's text without memory

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A recurrent net's training memory, so a run resumed mid-epoch reads on exactly as it would have
        # (the data resumes at the next batch of each row, not at a segment start that would rebuild it).
        # The cache's attributes are tensors (Transformer-XL's `Memory.layers`): they load weights-only.
        if "train" in self.caches:
            checkpoint[TRAIN_CACHE] = {"epoch": self.current_epoch, "state": vars(self.caches["train"])}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(TRAIN_CACHE)
        if saved is not None:
            cache = self.net.new_cache()
            vars(cache).update(saved["state"])
            self.caches["train"] = cache
            self.restored_cache = {"epoch": saved["epoch"]}

    def _loss(self, stage: str, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.net.recurrent:
            if stage not in self.caches:
                self.caches[stage] = self.net.new_cache()
            logits = self.net(inputs, self.caches[stage])
        else:
            logits = self(inputs)  # through forward, so an exported form of it can stand in (dlforge.compress)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def _evaluate(self, stage: str, batch) -> None:
        inputs, targets = batch
        metrics = self.eval_metrics[stage]
        metrics["loss"].update(self._loss(stage, inputs, targets), weight=targets.numel())
        for name, metric in metrics.items():
            self.log(f"{stage}/{name}", metric, prog_bar=name == "loss")

    def sample_media(self, batch, tokenizer: Tokenizer | None) -> list[Media]:
        """Each input window beside the model's next-token predictions (greedy, every position); a
        recurrent net reads the window without the memory of the text before it."""
        if tokenizer is None:
            return []
        inputs, targets = batch
        predicted = self(inputs).argmax(-1)
        rows = [[tokenizer.decode(row.tolist()) for row in texts] for texts in zip(inputs, predicted, targets)]
        return [Table("test/text_samples", ["input", "predicted", "true"], rows), self._generated(inputs, tokenizer)]

    def _generated(self, inputs: torch.Tensor, tokenizer: Tokenizer) -> Table:
        """Text the model writes on its own: greedy continuations (no randomness drawn) of the starts of the first
        test windows."""
        rows = []
        for row in inputs[:GENERATED_SAMPLES]:
            prompt = row[:PROMPT_TOKENS].tolist()
            new = generate(
                self.net,
                prompt,
                GENERATED_TOKENS,
                temperature=0,
                eos_id=tokenizer.eos_id,
                vocab_size=tokenizer.vocab_size,
                device=inputs.device,
            )
            rows.append([tokenizer.decode(prompt), tokenizer.decode(new)])
        return Table("test/generated", ["prompt", "generated (greedy)"], rows)
