"""An anchor-free YOLO-style detector (the YOLOX / YOLOv8 line), small enough to read top to bottom:

1. `FeaturePyramid`: a plain CNN backbone (conv-BN-SiLU stages, each halving the resolution) and a PAN-lite
   neck (FPN's top-down path, then a bottom-up one) giving feature maps at strides 8, 16 and 32, all
   `out_channels` wide. torchvision's detectors take it as their backbone as it is (the FCOS peer does).
2. `DecoupledHead`: per level, separate convolution branches for class logits and box distances (left, top,
   right, bottom from each cell's centre, in strides).
3. Training: a task-aligned assignment (TOOD, as YOLOv8): for each object the `topk` cells whose centres lie
   inside its box and whose predictions align best with it (class score^alpha x IoU^beta); their class
   targets are that alignment, rescaled so the best cell of an object gets its IoU. Binary cross-entropy on
   the classes, complete-IoU loss on the boxes (`torchvision.ops`), both weighted by those targets.
4. Eval: per-class scores of every cell, the best `pre_nms_topk`, class-wise NMS (`batched_nms`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision import ops

from dlforge.constraints import Positive, Probability

STRIDES = (8, 16, 32)


class ConvBlock(nn.Sequential):
    """conv (k x k, stride s) - BatchNorm - SiLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.SiLU(inplace=True),
        )


class FeaturePyramid(nn.Module):
    """Images (batch, 3, H, W) in [0, 1] -> {"p3", "p4", "p5"}: feature maps at strides 8, 16, 32, each
    `out_channels` wide. Backbone widths: `width` at stride 2, doubling at each stride after."""

    def __init__(self, width: int = 16, out_channels: int = 64):
        super().__init__()
        widths = [width * 2**i for i in range(5)]  # strides 2, 4, 8, 16, 32
        self.stem = ConvBlock(3, widths[0], stride=2)
        self.stages = nn.ModuleList(
            nn.Sequential(ConvBlock(widths[i], widths[i + 1], stride=2), ConvBlock(widths[i + 1], widths[i + 1]))
            for i in range(4)
        )
        self.lateral = nn.ModuleList(ConvBlock(w, out_channels, kernel=1) for w in widths[2:])
        self.top_down = nn.ModuleList(ConvBlock(out_channels, out_channels) for _ in range(2))
        self.down = nn.ModuleList(ConvBlock(out_channels, out_channels, stride=2) for _ in range(2))
        self.bottom_up = nn.ModuleList(ConvBlock(out_channels, out_channels) for _ in range(2))
        self.out_channels = out_channels

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        x = self.stem(images * 2 - 1)  # [0, 1] -> [-1, 1]
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        c3, c4, c5 = (lateral(f) for lateral, f in zip(self.lateral, features[1:]))
        # FPN: coarse semantics flow down to the finer maps
        p4 = self.top_down[0](c4 + F.interpolate(c5, size=c4.shape[-2:], mode="nearest"))
        p3 = self.top_down[1](c3 + F.interpolate(p4, size=c3.shape[-2:], mode="nearest"))
        # PAN: fine localisation flows back up
        n4 = self.bottom_up[0](p4 + self.down[0](p3))
        n5 = self.bottom_up[1](c5 + self.down[1](n4))
        return OrderedDict(p3=p3, p4=n4, p5=n5)


class PooledPyramid(FeaturePyramid):
    """A `Backbone` for pretraining a detector's `FeaturePyramid` as a classifier (data=scenes_objects): each
    level's map averaged over space, the three concatenated (`out_features` = 3 * `out_channels`). Its weights
    are a FeaturePyramid's, key for key: `model.pretrained_part=features` puts them into YOLO's."""

    def __init__(self, width: Annotated[int, Positive] = 16, out_channels: Annotated[int, Positive] = 64):
        super().__init__(width, out_channels)
        self.out_features = len(STRIDES) * out_channels

    def forward(self, images: Tensor) -> Tensor:
        return torch.cat([level.mean((2, 3)) for level in super().forward(images).values()], 1)


class DecoupledHead(nn.Module):
    """One level's head: (batch, channels, h, w) -> class logits (batch, h*w, K) and box distances
    (batch, h*w, 4) in strides, from separate branches (classification and localisation want different
    features: YOLOX's decoupled head)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.classes = nn.Sequential(ConvBlock(channels, channels), ConvBlock(channels, channels))
        self.boxes = nn.Sequential(ConvBlock(channels, channels), ConvBlock(channels, channels))
        self.class_logits = nn.Conv2d(channels, num_classes, 1)
        self.box_distances = nn.Conv2d(channels, 4, 1)
        # every cell starts at a 1 % object score: the many background cells do not swamp the first steps
        nn.init.constant_(self.class_logits.bias, -math.log(99))

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.class_logits(self.classes(features))
        distances = F.softplus(self.box_distances(self.boxes(features)))
        return logits.flatten(2).transpose(1, 2), distances.flatten(2).transpose(1, 2)


class YOLO(nn.Module):
    """The detector (a `Detector`): `forward(images, targets)` gives the losses in training mode and the
    detections in eval mode. `num_classes` object categories, labelled 1..K."""

    predicts_masks = False

    def __init__(
        self,
        num_classes: Annotated[int, Positive],
        width: Annotated[int, Positive] = 16,
        neck_channels: Annotated[int, Positive] = 64,
        topk: Annotated[int, Positive] = 10,
        alpha: float = 1.0,
        beta: float = 6.0,
        box_loss_weight: Annotated[float, Positive] = 5.0,
        score_threshold: Annotated[float, Probability] = 0.01,
        nms_iou: Annotated[float, Probability] = 0.6,
        pre_nms_topk: Annotated[int, Positive] = 1000,
        detections_per_image: Annotated[int, Positive] = 100,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.features = FeaturePyramid(width, neck_channels)
        self.heads = nn.ModuleList(DecoupledHead(neck_channels, num_classes) for _ in STRIDES)
        self.topk, self.alpha, self.beta = topk, alpha, beta
        self.box_loss_weight = box_loss_weight
        self.score_threshold, self.nms_iou = score_threshold, nms_iou
        self.pre_nms_topk, self.detections_per_image = pre_nms_topk, detections_per_image

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None):
        logits, boxes, centres = self.predict(images)
        if self.training:
            if targets is None:
                raise ValueError("YOLO in training mode needs targets")
            return self.losses(logits, boxes, centres, targets)
        return self.detections(logits, boxes, images.shape[-2:])

    def predict(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Every cell of every level: class logits (batch, cells, K), boxes (batch, cells, 4) xyxy in pixels,
        and the cells' centres (cells, 2)."""
        logits, boxes, centres = [], [], []
        for (features, head), stride in zip(zip(self.features(images).values(), self.heads), STRIDES):
            level_logits, distances = head(features)
            level_centres = cell_centres(features.shape[-2:], stride, images.device)
            distances = distances.float() * stride
            boxes.append(torch.cat([level_centres - distances[..., :2], level_centres + distances[..., 2:]], -1))
            logits.append(level_logits.float())  # losses and scores in fp32, also under bf16 autocast
            centres.append(level_centres)
        return torch.cat(logits, 1), torch.cat(boxes, 1), torch.cat(centres)

    def losses(
        self, logits: Tensor, boxes: Tensor, centres: Tensor, targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        class_targets, box_targets = self.assign(logits.detach().sigmoid(), boxes.detach(), centres, targets)
        weights = class_targets.sum(-1)  # (batch, cells): the alignment of each assigned cell, 0 elsewhere
        normaliser = weights.sum().clamp_min(1.0)
        classification = F.binary_cross_entropy_with_logits(logits, class_targets, reduction="sum") / normaliser
        assigned = weights > 0
        box = ops.complete_box_iou_loss(boxes[assigned], box_targets[assigned], reduction="none")
        return {
            "classification": classification,
            "box": self.box_loss_weight * (box * weights[assigned]).sum() / normaliser,
        }

    @torch.no_grad()
    def assign(
        self, scores: Tensor, boxes: Tensor, centres: Tensor, targets: list[dict[str, Tensor]]
    ) -> tuple[Tensor, Tensor]:
        """Task-aligned assignment, image by image: class targets (batch, cells, K), soft, and box targets
        (batch, cells, 4) (meaningful where the class targets are not all 0)."""
        class_targets = torch.zeros_like(scores)
        box_targets = torch.zeros_like(boxes)
        for image, target in enumerate(targets):
            gt_boxes, gt_labels = target["boxes"].float(), target["labels"] - 1
            if not len(gt_boxes):
                continue
            iou = ops.box_iou(gt_boxes, boxes[image])  # (objects, cells)
            inside = (centres[None] > gt_boxes[:, None, :2]).all(-1) & (centres[None] < gt_boxes[:, None, 2:]).all(-1)
            alignment = scores[image][:, gt_labels].T.pow(self.alpha) * iou.pow(self.beta) * inside
            best = alignment.topk(min(self.topk, alignment.shape[1]), dim=1).indices
            chosen = torch.zeros_like(inside).scatter_(1, best, True) & inside
            # a cell chosen by several objects goes to the one its box overlaps most
            owner = torch.where(chosen, iou, -1.0).argmax(0)
            chosen &= F.one_hot(owner, len(gt_boxes)).T.bool()
            alignment = alignment * chosen
            # rescaled per object: its best-aligned cell's target is its best IoU among its cells
            scale = (iou * chosen).amax(1, keepdim=True) / alignment.amax(1, keepdim=True).clamp_min(1e-9)
            strength = (alignment * scale).amax(0)  # (cells,)
            assigned = chosen.any(0)
            class_targets[image, assigned, gt_labels[owner[assigned]]] = strength[assigned]
            box_targets[image, assigned] = gt_boxes[owner[assigned]]
        return class_targets, box_targets

    @torch.no_grad()
    def detections(self, logits: Tensor, boxes: Tensor, image_size: torch.Size) -> list[dict[str, Tensor]]:
        found = []
        for image_logits, image_boxes in zip(logits, boxes):
            scores, indices = image_logits.sigmoid().flatten().topk(min(self.pre_nms_topk, image_logits.numel()))
            keep = scores > self.score_threshold
            scores, indices = scores[keep], indices[keep]
            cells, labels = indices // self.num_classes, indices % self.num_classes + 1
            kept_boxes = ops.clip_boxes_to_image(image_boxes[cells], image_size)
            keep = ops.batched_nms(kept_boxes, scores, labels, self.nms_iou)[: self.detections_per_image]
            found.append({"boxes": kept_boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return found


def cell_centres(shape: tuple[int, int], stride: int, device: torch.device) -> Tensor:
    """The centres (h*w, 2) of a level's cells in pixels, x then y, row by row."""
    ys, xs = torch.meshgrid(torch.arange(shape[0], device=device), torch.arange(shape[1], device=device), indexing="ij")
    return (torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * stride
