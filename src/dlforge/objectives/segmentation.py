"""Semantic segmentation: per-pixel cross-entropy on any `PixelClassifier`, scored by the mean IoU over the
split as VOC and Cityscapes define it."""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from dlforge.constraints import NonNegative
from dlforge.data.tokenizers import Tokenizer
from dlforge.nets.contracts import PixelClassifier
from dlforge.objectives.base import Freeze, Objective, OptimizerFactory, SchedulerFactory, data_categories
from dlforge.objectives.media import ClassScores, Images, Media
from dlforge.objectives.metrics import log_train_loss

IGNORE = 255  # the label of pixels that are not scored: VOC's void band around objects, padding


class SemanticSegmentation(Objective):
    """Trains on per-pixel cross-entropy plus, with `dice_weight`, that times the soft Dice loss (nnU-Net's
    pairing): cross-entropy is a sum over pixels, so the background's many pixels dominate it; Dice scores
    each class by its overlap, whatever its area, as the macro mIoU does. Logs `{train,val,test}/loss` and
    `{val,test}/{miou,pixel_acc}`. mIoU is torchmetrics' `MulticlassJaccardIndex(average="macro")`: one
    confusion matrix over the whole split (not a mean of per-image IoUs), averaged over the classes that
    occur in the targets or the predictions; pixels labelled 255 count nowhere. Its test artifact is the IoU
    of each class; its sample media are test images with the predicted and the true masks drawn on them."""

    net_contract = PixelClassifier
    default_monitor = ("val/miou", "max")

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        pretrained: str | None = None,
        freeze: Freeze = "none",
        compile: bool = False,
        dice_weight: Annotated[float, NonNegative] = 0.0,
        channels_last: bool = False,
    ):
        super().__init__(net, optimizer, scheduler, pretrained, freeze, compile, channels_last=channels_last)
        classes = net.num_classes
        self.dice_weight = dice_weight
        metrics = MetricCollection(
            {
                "miou": MulticlassJaccardIndex(classes, average="macro", ignore_index=IGNORE),
                "pixel_acc": MulticlassAccuracy(classes, average="micro", ignore_index=IGNORE),
            }
        )
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.test_class_iou = MulticlassJaccardIndex(classes, average="none", ignore_index=IGNORE)
        self.class_iou: ClassScores | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (batch, classes, height, width); images whose sides the net cannot take are padded with
        zeros at the bottom and right and the logits cropped back."""
        height, width = images.shape[-2:]
        divisor = self.net.size_divisor
        padded = F.pad(images, (0, -width % divisor, 0, -height % divisor))
        return self.net(padded)[..., :height, :width]

    def criterion(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        log_probs = logits.log_softmax(1)  # one softmax for both terms: at full resolution it is a step's cost
        loss = F.nll_loss(log_probs, masks, ignore_index=IGNORE)
        return loss + self.dice_weight * soft_dice_loss(log_probs, masks) if self.dice_weight else loss

    def training_step(self, batch, batch_idx):
        images, masks = batch
        loss = self.criterion(self(images), masks)
        log_train_loss(self, loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_loss, self.val_metrics, "val/loss")

    def test_step(self, batch, batch_idx):
        predicted = self._evaluate(batch, self.test_loss, self.test_metrics, "test/loss")
        self.test_class_iou.update(predicted, batch[1])

    def on_test_epoch_end(self):
        scores = self.test_class_iou.compute().cpu()
        self.test_class_iou.reset()
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        names = data_categories(datamodule) or [str(index) for index in range(len(scores))]
        self.class_iou = ClassScores("test/iou", "IoU", dict(zip(names, scores.tolist())))

    def _evaluate(self, batch, loss_metric: MeanMetric, metrics: MetricCollection, loss_name: str) -> torch.Tensor:
        images, masks = batch
        logits = self(images)
        loss_metric.update(self.criterion(logits, masks), weight=(masks != IGNORE).sum())
        predicted = logits.argmax(1)
        metrics.update(predicted, masks)
        self.log(loss_name, loss_metric, prog_bar=True)
        self.log_dict(metrics, prog_bar=True)
        return predicted

    def test_artifacts(self) -> list[ClassScores]:
        return [] if self.class_iou is None else [self.class_iou]

    def sample_media(self, batch, tokenizer: Tokenizer | None) -> list[Media]:
        """Up to 8 test images, each twice: with the predicted classes drawn on it, then with the true ones
        (the ignored pixels in white)."""
        images, masks = (part[:8].cpu() for part in batch)
        predicted = self(images.to(self.device)).argmax(1).cpu()
        colors = _palette(self.net.num_classes)
        drawn, captions = [], []
        for image, guess, truth in zip((images.clamp(0, 1) * 255).to(torch.uint8), predicted, masks):
            drawn += [_overlay(image, guess, colors), _overlay(image, truth, colors)]
            captions += ["predicted", "true"]
        return [Images("test/segmentation", torch.stack(drawn), captions)]


def soft_dice_loss(log_probs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """1 - the mean over classes of the soft Dice coefficient, each class's probabilities and one-hot targets
    summed over the whole batch (nnU-Net's batch Dice: a class absent from one image still counts in the
    others), pixels labelled 255 left out. The +1 keeps a class absent from the batch and not predicted at ~1.
    The sums are taken without a one-hot tensor (as large as the logits): a pixel's overlap is the probability
    of its true class, added to that class's total."""
    classes = log_probs.shape[1]
    kept = masks != IGNORE
    truth = masks.masked_fill(~kept, 0)
    probs = log_probs.exp()
    true_probs = probs.gather(1, truth.unsqueeze(1)).squeeze(1) * kept
    overlap = probs.new_zeros(classes).index_add(0, truth.flatten(), true_probs.flatten())
    predicted = torch.einsum("bchw,bhw->c", probs, kept.to(probs.dtype))
    true_pixels = torch.bincount(truth[kept], minlength=classes).to(probs.dtype)
    dice = (2 * overlap + 1) / (predicted + true_pixels + 1)
    return 1 - dice.mean()


def _overlay(image: torch.Tensor, labels: torch.Tensor, colors: list[tuple[int, int, int]]) -> torch.Tensor:
    """`image` (uint8) with every class but the background (0) drawn in its colour and ignored pixels in white,
    as floats in [0, 1]."""
    from torchvision.utils import draw_segmentation_masks

    shown = torch.tensor([*range(1, len(colors)), IGNORE])
    masks = labels[None] == shown[:, None, None]
    return draw_segmentation_masks(image, masks, alpha=0.6, colors=[*colors[1:], (255, 255, 255)]).float() / 255


def _palette(count: int) -> list[tuple[int, int, int]]:
    """A distinct colour per class (matplotlib's tab20, cycled)."""
    from matplotlib import colormaps

    table = colormaps["tab20"].colors
    return [tuple(round(255 * channel) for channel in table[index % len(table)]) for index in range(count)]
