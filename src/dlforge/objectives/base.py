"""What every objective shares: the optimizer and schedule wiring, the default monitor, fine-tuning from
another run's network weights and freezing, and the hooks through which the run and the loggers get test
artifacts and sample media without guessing at the objective's kind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
from lightning.pytorch import LightningModule
from torch import nn

from dlforge.errors import ConfigError
from dlforge.objectives.media import Media, TestArtifact
from dlforge.objectives.optim import configure
from dlforge.objectives.pretrained import load_pretrained_net

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]
Freeze = Literal["none", "embeddings", "all"]


class Objective(LightningModule):
    """A network `net` trained for one kind of objective.

    `optimizer` is called with the parameter groups, `scheduler` with the optimizer and the total number
    of optimizer steps; both come from config as partials and are never saved in checkpoints (an
    objective built without them can only evaluate).

    Fine-tuning: `pretrained` (a checkpoint of a run whose `net` is built the same way, e.g. an encoder
    pretrained by `model=bert_mlm`) initialises the net when fitting starts (a resumed run then restores
    its own weights over it); `freeze` keeps the net's embedding layers or the whole net fixed.
    """

    default_monitor: ClassVar[tuple[str, Literal["min", "max"]]]  # used when the config's `monitor` is null

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        pretrained: str | None = None,
        freeze: Freeze = "none",
    ):
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.pretrained = pretrained
        frozen = {"none": [], "embeddings": [m for m in net.modules() if isinstance(m, nn.Embedding)], "all": [net]}[freeze]
        if freeze != "none" and not frozen:
            raise ConfigError(f"model.freeze={freeze}: {type(net).__name__} has no embedding layers")
        for module in frozen:
            module.requires_grad_(False)  # param_groups leaves them out of the optimizer

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.pretrained is not None:
            tokenizer = getattr(self.trainer.datamodule, "tokenizer", None)
            load_pretrained_net(self.net, self.pretrained, tokenizer)

    def configure_optimizers(self):
        return configure(self, self.optimizer_factory, self.scheduler_factory)

    def test_artifacts(self) -> list[TestArtifact]:
        """What the last test computed beyond scalar metrics (a confusion matrix, say): recorded with the
        run's final metrics and shown by loggers."""
        return []

    def sample_media(self, batch: Any, tokenizer: Any | None) -> list[Media]:
        """Predictions on (the start of) a test batch, for loggers to show; `tokenizer` decodes token ids
        when the data is text."""
        return []
