"""Objectives: one LightningModule per kind of objective, each taking any suitable network."""

from lightning.pytorch import LightningModule
from torch import Tensor


def log_train_loss(module: LightningModule, loss: Tensor) -> None:
    """Log the training loss on the steps whose logs Lightning writes (every `trainer.log_every_n_steps`)
    only: each `self.log` call costs Python time that is a few per cent of a small model's step."""
    trainer = module._trainer
    if trainer is None or trainer._logger_connector.should_update_logs:
        module.log("train/loss", loss, prog_bar=True)
