"""The peer of our YOLO: torchvision's FCOS (anchor-free, centre sampling, centre-ness, focal loss) on the SAME
backbone and neck (`yolo.FeaturePyramid`), so that a comparison of the two measures the heads, assignments and
losses, not the features."""

from __future__ import annotations

import math
from functools import partial
from typing import Annotated

from torch import Tensor, nn
from torchvision.models.detection import fcos
from torchvision.models.detection.anchor_utils import AnchorGenerator

from dlforge.constraints import Positive, Probability
from dlforge.nets.vision.yolo import STRIDES, FeaturePyramid


class FCOS(nn.Module):
    """A `Detector`: torchvision's FCOS over `FeaturePyramid(width, neck_channels)` with `head_convs`
    GroupNorm convolutions per branch (YOLO's heads have 2). Sized for small images: torchvision resizes
    inputs to `min_size=800` by default, which would upsample a 128-pixel scene six-fold; here its resize is
    to `image_size` (a no-op on the scenes), and one anchor point per cell whose size is the level's stride
    (what FCOS's scale ranges and box coding are relative to)."""

    predicts_masks = False

    def __init__(
        self,
        num_classes: Annotated[int, Positive],
        image_size: Annotated[int, Positive] = 128,
        width: Annotated[int, Positive] = 16,
        neck_channels: Annotated[int, Positive] = 64,
        head_convs: Annotated[int, Positive] = 2,
        score_threshold: Annotated[float, Probability] = 0.01,
        nms_iou: Annotated[float, Probability] = 0.6,
        pre_nms_topk: Annotated[int, Positive] = 1000,
        detections_per_image: Annotated[int, Positive] = 100,
    ):
        super().__init__()
        self.num_classes = num_classes
        backbone = FeaturePyramid(width, neck_channels)
        head = fcos.FCOSHead(neck_channels, 1, num_classes, num_convs=0)  # its branches are made below:
        # GroupNorm with torchvision's 32 groups, or fewer where the width is not a multiple of 32
        norm = partial(nn.GroupNorm, math.gcd(32, neck_channels))
        classes = fcos.FCOSClassificationHead(neck_channels, 1, num_classes, head_convs, norm_layer=norm)
        head.classification_head = classes
        head.regression_head = fcos.FCOSRegressionHead(neck_channels, 1, head_convs, norm_layer=norm)
        self.model = fcos.FCOS(
            backbone,
            # sigmoid classes, no background class: labels 1..K are shifted to 0..K-1 and back
            num_classes=num_classes,
            min_size=image_size,
            max_size=image_size,
            image_mean=[0.0, 0.0, 0.0],  # the backbone maps [0, 1] to [-1, 1] itself, as for YOLO
            image_std=[1.0, 1.0, 1.0],
            anchor_generator=AnchorGenerator(tuple((stride,) for stride in STRIDES), ((1.0,),) * len(STRIDES)),
            head=head,
            score_thresh=score_threshold,
            nms_thresh=nms_iou,
            detections_per_img=detections_per_image,
            topk_candidates=pre_nms_topk,
        )

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None):
        if self.training:
            if targets is None:
                raise ValueError("FCOS in training mode needs targets")
            # boxes and labels only: torchvision's transform would resize any masks along
            targets = [{"boxes": target["boxes"], "labels": target["labels"] - 1} for target in targets]
            return self.model(list(images), targets)
        return [{**found, "labels": found["labels"] + 1} for found in self.model(list(images))]
