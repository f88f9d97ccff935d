"""Object detection, and instance segmentation, with any `Detector` net (torchvision's convention): the net's
losses summed in training; on val and test, COCO mean average precision by torchmetrics'
`MeanAveragePrecision` on pycocotools (the field's reference code), for boxes and, when the net predicts
them, for masks."""

from __future__ import annotations

import torch
from pycocotools.cocoeval import Params
from torch import Tensor, nn
from torchmetrics.detection import MeanAveragePrecision
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from dlforge.data.tokenizers import Tokenizer
from dlforge.nets.contracts import Detector
from dlforge.objectives.base import Freeze, Objective, OptimizerFactory, SchedulerFactory, data_categories
from dlforge.objectives.media import ClassScores, Images, Media
from dlforge.objectives.metrics import log_train_loss, logs_written_this_step

SCORES = ("map", "map_50", "map_75", "mar_100")  # of MeanAveragePrecision's results, the ones logged
# one colour per class in the pictures (matplotlib's tab10)
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def coco_map(iou_types: tuple[str, ...], class_metrics: bool = False) -> MeanAveragePrecision:
    """MeanAveragePrecision on pycocotools with COCOeval's own IoU and recall thresholds: torchmetrics' defaults
    are float32 (0.550000011920929 ...), which moves a precision read at a recall such as 0.3 to the next
    point, and mAP by ~1e-5 from COCOeval's."""
    coco = Params("bbox")
    return MeanAveragePrecision(
        iou_type=iou_types,
        backend="pycocotools",
        iou_thresholds=coco.iouThrs.tolist(),
        rec_thresholds=coco.recThrs.tolist(),
        class_metrics=class_metrics,
    )


class Detection(Objective):
    """Logs `train/loss` (the sum of the net's losses) and each loss as `train/loss_<name>`; on val and test
    `map` (mAP@[.5:.95]), `map_50`, `map_75` and `mar_100` of the boxes, and `segm_map` ... of the masks (a
    predicted mask is its probabilities above `mask_threshold`) when the net predicts masks. Its test
    artifacts: the AP of each class (boxes, and masks). Its pictures: the first test images with the
    predictions scoring at least `picture_score_threshold` drawn on them."""

    net_contract = Detector
    default_monitor = ("val/map", "max")

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        mask_threshold: float = 0.5,
        picture_score_threshold: float = 0.3,
        pretrained: str | None = None,
        freeze: Freeze = "none",
        compile: bool = False,
        pretrained_part: str | None = None,
        channels_last: bool = False,
    ):
        super().__init__(net, optimizer, scheduler, pretrained, freeze, compile, pretrained_part, channels_last)
        self.mask_threshold = mask_threshold
        self.picture_score_threshold = picture_score_threshold
        self.iou_types = ("bbox", "segm") if net.predicts_masks else ("bbox",)
        self.val_map = coco_map(self.iou_types)
        self.test_map = coco_map(self.iou_types, class_metrics=True)
        self.test_per_class: list[ClassScores] = []
        self.categories: list[str] | None = None  # class names, from the data once it is attached

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.categories = data_categories(self.trainer.datamodule)

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None):
        return self.net(images, targets)

    def training_step(self, batch, batch_idx):
        images, targets = batch
        losses = self.net(images, targets)
        loss = sum(losses.values())
        if logs_written_this_step(self):
            self.log_dict({f"train/loss_{name}": value for name, value in losses.items()}, sync_dist=True)
        log_train_loss(self, loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self._update(self.val_map, batch)

    def test_step(self, batch, batch_idx):
        self._update(self.test_map, batch)

    def on_validation_epoch_end(self):
        self._log_scores(self.val_map.compute(), "val")
        self.val_map.reset()

    def on_test_epoch_end(self):
        results = self.test_map.compute()
        self.test_map.reset()
        self._log_scores(results, "test")
        classes = results["classes"].tolist()
        self.test_per_class = []
        for iou_type in self.iou_types:
            # AP -1: a class with predictions but no object in the split, for which COCO has no AP
            scores = {
                self._name(label): ap
                for label, ap in zip(classes, results[self._key(iou_type, "map_per_class")].tolist())
                if ap >= 0
            }
            name = "ap_per_class" if iou_type == "bbox" else "segm_ap_per_class"
            self.test_per_class.append(ClassScores(f"test/{name}", "AP" if iou_type == "bbox" else "mask AP", scores))

    def test_artifacts(self) -> list[ClassScores]:
        return self.test_per_class

    def sample_media(self, batch, tokenizer: Tokenizer | None) -> list[Media]:
        images, targets = batch
        predictions = self.net(images)
        pictures, captions = [], []
        for image, found, target in zip(images, predictions, targets):
            keep = found["scores"] >= self.picture_score_threshold
            picture = (image.float().clamp(0, 1) * 255).to(torch.uint8).cpu()
            labels, scores = found["labels"][keep].tolist(), found["scores"][keep].tolist()
            colours = [PALETTE[(label - 1) % len(PALETTE)] for label in labels]
            if self.net.predicts_masks and labels:
                masks = found["masks"][keep, 0].float().cpu() > self.mask_threshold
                picture = draw_segmentation_masks(picture, masks, alpha=0.4, colors=colours)
            names = [f"{self._name(label)} {score:.2f}" for label, score in zip(labels, scores)]
            picture = draw_bounding_boxes(picture, found["boxes"][keep].float().cpu(), names, colours, width=1)
            pictures.append(picture.float() / 255)
            captions.append(f"{int(keep.sum())} found / {len(target['labels'])} true")
        return [Images("test/detections", torch.stack(pictures), captions)]

    def _update(self, metric: MeanAveragePrecision, batch) -> None:
        images, targets = batch
        predictions = self.net(images)
        predicted, true = [], []
        for found, target in zip(predictions, targets):
            # boxes and scores in fp32 whatever the precision: bf16 would move boxes by up to a pixel
            predicted.append(
                {"boxes": found["boxes"].float(), "scores": found["scores"].float(), "labels": found["labels"]}
            )
            true.append({"boxes": target["boxes"].float(), "labels": target["labels"]})
            if "iscrowd" in target:
                true[-1]["iscrowd"] = target["iscrowd"]
            if self.net.predicts_masks:
                predicted[-1]["masks"] = found["masks"][:, 0].float() > self.mask_threshold
                true[-1]["masks"] = target["masks"].bool()
        metric.update(predicted, true)

    def _log_scores(self, results: dict[str, Tensor], stage: str) -> None:
        logged = {}
        for iou_type in self.iou_types:
            prefix = "" if iou_type == "bbox" else "segm_"
            logged |= {f"{stage}/{prefix}{score}": results[self._key(iou_type, score)].squeeze() for score in SCORES}
        # the same values on every process (the metric gathers all predictions): the mean over them is exact
        self.log_dict(logged, prog_bar=True, sync_dist=True)

    def _key(self, iou_type: str, score: str) -> str:
        """MeanAveragePrecision's name for a score: prefixed by the IoU type when it computes several."""
        return score if len(self.iou_types) == 1 else f"{iou_type}_{score}"

    def _name(self, label: int) -> str:
        return self.categories[label - 1] if self.categories else f"class {label}"
