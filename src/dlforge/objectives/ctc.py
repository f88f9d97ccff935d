"""CTC speech recognition (Graves et al. 2006): any `FrameClassifier` trained with the CTC loss over
characters, decoded greedily (the best class of each frame, repeats merged, blanks dropped), scored by word
and character error rates."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.text import CharErrorRate, WordErrorRate

from dlforge.data.audio import decode
from dlforge.data.tokenizers import Tokenizer
from dlforge.nets.contracts import FrameClassifier
from dlforge.objectives.base import Freeze, Objective, OptimizerFactory, SchedulerFactory
from dlforge.objectives.media import Audio, Media
from dlforge.objectives.metrics import log_train_loss

BLANK = 0


def greedy_decode(logits: torch.Tensor, frames: torch.Tensor) -> list[list[int]]:
    """Per clip, the class ids of its frames' best classes with repeats merged and blanks dropped."""
    decoded = []
    for best, count in zip(logits.argmax(-1).tolist(), frames.tolist()):
        best = best[:count]
        decoded.append([c for i, c in enumerate(best) if c != BLANK and (i == 0 or c != best[i - 1])])
    return decoded


class CTCRecognizer(Objective):
    """Logs `train/loss` and `{val,test}/{loss,wer,cer}` (torchmetrics' WER and CER over the split: errors
    summed over utterances, divided by the reference words or characters). The loss is averaged over the
    utterances of a batch, each one's divided by its transcript's length (torch's `reduction="mean"`)."""

    net_contract = FrameClassifier
    default_monitor = ("val/wer", "min")

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
        metrics = MetricCollection({"wer": WordErrorRate(), "cer": CharErrorRate()})
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor | None = None):
        return self.net(waves, lengths)

    def transcribe(self, waves: torch.Tensor, lengths: torch.Tensor | None = None) -> list[str]:
        return [decode(ids) for ids in greedy_decode(*self(waves, lengths))]

    def _loss(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        waves, lengths, targets, target_lengths = batch
        logits, frames = self(waves, lengths)
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (frames, batch, classes), as F.ctc_loss takes
        loss = F.ctc_loss(log_probs, targets, frames, target_lengths, blank=BLANK, zero_infinity=True)
        return loss, logits, frames

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)[0]
        log_train_loss(self, loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_loss, self.val_metrics, "val/loss")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, self.test_loss, self.test_metrics, "test/loss")

    def _evaluate(self, batch, loss_metric: MeanMetric, metrics: MetricCollection, loss_name: str) -> None:
        loss, logits, frames = self._loss(batch)
        targets, target_lengths = batch[2], batch[3]
        predicted = [decode(ids) for ids in greedy_decode(logits, frames)]
        references = [decode(target[:length].tolist()) for target, length in zip(targets, target_lengths)]
        loss_metric.update(loss, weight=len(targets))
        metrics.update(predicted, references)
        self.log(loss_name, loss_metric, prog_bar=True)
        self.log_dict(metrics, prog_bar=True)

    def sample_media(self, batch, tokenizer: Tokenizer | None) -> list[Media]:
        waves, lengths, targets, target_lengths = batch
        predicted = self.transcribe(waves, lengths)
        said = [decode(target[:count].tolist()) for target, count in zip(targets, target_lengths)]
        captions = [f"heard: {guess} / said: {true}" for guess, true in zip(predicted, said)]
        return [Audio("test/transcriptions", waves.cpu(), self.net.sample_rate, captions)]
