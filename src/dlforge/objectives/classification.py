"""Classification: a linear head on any `Backbone` (its `out_features`), trained with cross-entropy."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from dlforge.data.tokenizers import Tokenizer
from dlforge.nets.contracts import Backbone
from dlforge.objectives.base import Freeze, Objective, OptimizerFactory, SchedulerFactory
from dlforge.objectives.media import Audio, ConfusionMatrix, Images, Media, Table
from dlforge.objectives.metrics import EpochAccuracy, log_train_loss


class Classifier(Objective):
    """Logs `{train,val,test}/{loss,acc,f1}` (accuracy over samples, macro F1); its test artifact is the
    confusion matrix. Fine-tuning and freezing as every objective (`Objective`); `freeze=all` trains
    the head only."""

    net_contract = Backbone
    default_monitor = ("val/acc", "max")

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        label_smoothing: float = 0.0,
        pretrained: str | None = None,
        freeze: Freeze = "none",
        compile: bool = False,
        channels_last: bool = False,
    ):
        super().__init__(net, optimizer, scheduler, pretrained, freeze, compile, channels_last=channels_last)
        self.head = nn.Linear(net.out_features, num_classes)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "f1": MulticlassF1Score(num_classes, average="macro"),
            }
        )
        self.train_acc = EpochAccuracy()
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.test_confusion_matrix: torch.Tensor | None = None

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(inputs))

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        logits = self(inputs)
        loss = self.criterion(logits, targets)
        self.train_acc.update(logits, targets)
        log_train_loss(self, loss)
        return loss

    def on_train_epoch_end(self):
        self.log("train/acc", self.train_acc)  # computed over the epoch, then reset

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_loss, self.val_metrics, "val/loss")

    def test_step(self, batch, batch_idx):
        logits = self._evaluate(batch, self.test_loss, self.test_metrics, "test/loss")
        self.test_confusion.update(logits, batch[1])

    def on_test_epoch_end(self):
        self.test_confusion_matrix = self.test_confusion.compute().cpu()
        self.test_confusion.reset()

    def _evaluate(self, batch, loss_metric: MeanMetric, metrics: MetricCollection, loss_name: str):
        inputs, targets = batch
        logits = self(inputs)
        loss_metric.update(self.criterion(logits, targets), weight=targets.numel())
        metrics.update(logits, targets)
        self.log(loss_name, loss_metric, prog_bar=True)
        self.log_dict(metrics, prog_bar=True)
        return logits

    def test_artifacts(self) -> list[ConfusionMatrix]:
        return (
            []
            if self.test_confusion_matrix is None
            else [ConfusionMatrix("test/confusion_matrix", self.test_confusion_matrix)]
        )

    def sample_media(self, batch, tokenizer: Tokenizer | None) -> list[Media]:
        inputs, targets = batch
        predicted = self(inputs).argmax(-1).tolist()
        captions = [f"predicted {guess} / true {true}" for guess, true in zip(predicted, targets.tolist())]
        if inputs.is_floating_point() and inputs.ndim == 2:  # sound clips (their nets take 16 kHz)
            return [Audio("test/predictions", inputs.cpu(), 16000, captions)]
        if inputs.is_floating_point() and inputs.ndim == 5:  # clips (batch, frames, channels, height, width)
            # each clip as a strip of its frames, left to right
            return [Images("test/predictions", inputs.permute(0, 2, 3, 1, 4).flatten(3).cpu(), captions, 2)]
        if inputs.is_floating_point():  # images
            return [Images("test/predictions", inputs.cpu(), captions)]
        if tokenizer is None:
            return []
        rows = [
            [tokenizer.decode(text.tolist()), str(guess), str(true)]  # decode drops the cls and pad tokens
            for text, guess, true in zip(inputs, predicted, targets.tolist())
        ]
        return [Table("test/text_samples", ["input", "predicted", "true"], rows)]
