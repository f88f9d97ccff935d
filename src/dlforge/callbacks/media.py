"""Shows what an objective declares about itself (`Objective.test_artifacts`, `Objective.sample_media`)
in W&B at the end of testing: a confusion matrix as an image, images with their captions, tables of
text. Added by the run only when a W&B logger is configured."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback
from lightning.pytorch.loggers import WandbLogger

from dlforge.objectives.base import data_tokenizer
from dlforge.objectives.media import ConfusionMatrix, Images, Media, Table, TestArtifact


class MediaLogger(Callback):
    """Logs the sample media of the first `samples` inputs of the first test batch, and the test
    artifacts, to the trainer's W&B run (global-zero process only: other ranks hold a dummy run)."""

    def __init__(self, samples: int = 16):
        self.samples = samples
        self.media: list[Media] = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx != 0 or _wandb_run(trainer) is None:
            return
        head = [part[: self.samples] for part in batch]
        with torch.no_grad():
            self.media = pl_module.sample_media(head, data_tokenizer(trainer.datamodule))

    def on_test_end(self, trainer, pl_module) -> None:
        run = _wandb_run(trainer)
        if run is not None:
            shown = {item.key: _to_wandb(item) for item in [*pl_module.test_artifacts(), *self.media]}
            if shown:
                run.log(shown)
        self.media = []


def _wandb_run(trainer):
    if not trainer.is_global_zero:
        return None
    return next((logger.experiment for logger in trainer.loggers if isinstance(logger, WandbLogger)), None)


def _to_wandb(item: TestArtifact | Media) -> Any:
    import wandb

    if isinstance(item, ConfusionMatrix):
        return _confusion_image(item.matrix)
    if isinstance(item, Images):
        return [wandb.Image(_unit_range(image), caption=caption) for image, caption in zip(item.images, item.captions)]
    if isinstance(item, Table):
        return wandb.Table(columns=item.columns, data=item.rows)
    raise TypeError(f"no W&B form for {type(item).__name__}")


def _unit_range(image: torch.Tensor) -> torch.Tensor:
    """An image rescaled to [0, 1] for display (the data is normalised per channel)."""
    low, high = image.min(), image.max()
    return (image - low) / (high - low).clamp_min(1e-8)


def _confusion_image(confusion: torch.Tensor):
    import matplotlib.pyplot as plt
    import wandb
    from torchmetrics.utilities.plot import plot_confusion_matrix

    figure, axes = plot_confusion_matrix(confusion)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    image = wandb.Image(figure)
    plt.close(figure)
    return image
