"""Classification: a linear head on any backbone that exposes `out_features`, trained with cross-entropy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from dlforge.errors import ConfigError
from dlforge.objectives.metrics import EpochAccuracy, log_train_loss
from dlforge.objectives.optim import configure
from dlforge.objectives.pretrained import load_pretrained_net

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class Classifier(LightningModule):
    """Logs `{train,val,test}/{loss,acc,f1}` (accuracy over samples, macro F1) and keeps the test
    confusion matrix in `test_confusion_matrix`.

    `optimizer` is called with the parameter groups, `scheduler` with the optimizer and the total
    number of optimizer steps; both come from config as partials and are never saved in checkpoints.

    Fine-tuning: `pretrained` (a checkpoint of a run whose model has a `net` built the same way, e.g. an
    encoder pretrained by `model=bert_mlm`) initialises the net when fitting starts (a resumed run then
    restores its own weights over it); `freeze` keeps the net's embedding layers or the whole net (only
    the head trains) fixed.
    """

    default_monitor = ("val/acc", "max")  # used when the config's `monitor` is null

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        label_smoothing: float = 0.0,
        pretrained: str | None = None,
        freeze: Literal["none", "embeddings", "all"] = "none",
    ):
        super().__init__()
        self.net = net
        self.pretrained = pretrained
        frozen = {"none": [], "embeddings": [m for m in net.modules() if isinstance(m, nn.Embedding)], "all": [net]}[freeze]
        if freeze != "none" and not frozen:
            raise ConfigError(f"model.freeze={freeze}: {type(net).__name__} has no embedding layers")
        for module in frozen:
            module.requires_grad_(False)  # param_groups leaves them out of the optimizer
        self.head = nn.Linear(net.out_features, num_classes)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
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

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.pretrained is not None:
            tokenizer = getattr(self.trainer.datamodule, "tokenizer", None)
            load_pretrained_net(self.net, self.pretrained, tokenizer)

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

    def configure_optimizers(self):
        return configure(self, self.optimizer_factory, self.scheduler_factory)
