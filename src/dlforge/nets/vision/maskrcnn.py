"""Mask R-CNN (He et al. 2017) for small images: torchvision's implementation (RPN, box and mask heads,
losses, post-processing) on a small backbone of ours, conv stages under a feature pyramid, with sizes set
for images of ~128 pixels and objects of 16-64, and our RoIAlign (torchvision's values, a faster backward).
torchvision's defaults are set for COCO at 800 pixels: they would upsample a 128-pixel image 6x, anchor
32-512 pixel boxes and run 1024-wide box and 256-wide mask heads on 2000 proposals per image, far more than
CPU training of small scenes needs."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Annotated

from torch import nn
from torchvision.models.detection import mask_rcnn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

from dlforge.constraints import ParameterError, Positive, Probability
from dlforge.nets.layers.conv import conv_bn_relu
from dlforge.nets.layers.roi_align import PyramidRoIAlign


def conv_fpn_backbone(channels: Sequence[int], fpn_channels: int) -> BackboneWithFPN:
    """`len(channels)` stages of two conv-BN-ReLU layers, each starting with a stride of 2; the feature pyramid
    takes every stage's output but the first (strides 4, 8, ...) plus a max-pooled level above the last, all
    `fpn_channels` wide (torchvision's FPN; `out_channels` tells Mask R-CNN the width)."""
    stages, width = OrderedDict(), 3
    for index, out in enumerate(channels):
        stages[f"stage{index}"] = nn.Sequential(*conv_bn_relu(width, out, stride=2), *conv_bn_relu(out, out))
        width = out
    pyramid = {f"stage{index}": str(index - 1) for index in range(1, len(channels))}  # FPN levels '0', '1', ...
    return BackboneWithFPN(nn.Sequential(stages), pyramid, list(channels[1:]), fpn_channels)


class MaskRCNN(mask_rcnn.MaskRCNN):
    """A `Detector` with masks: torchvision's MaskRCNN (forward: images and targets -> a dict of losses in
    training; images -> boxes, scores, labels, masks (m, 1, H, W) per image in eval) over
    `conv_fpn_backbone`. Images are resized to `image_size` on their longer side (the scenes' own size:
    no resize) and normalised by torchvision's transform. One anchor size per pyramid level, three aspect
    ratios each; the box head is two `box_head_width` layers, the mask head `mask_head_layers` 3x3 convs."""

    predicts_masks = True

    def __init__(
        self,
        num_classes: Annotated[int, Positive],
        image_size: Annotated[int, Positive] = 128,
        channels: Sequence[int] = (32, 64, 128, 256),
        fpn_channels: Annotated[int, Positive] = 64,
        anchor_sizes: Sequence[int] = (16, 32, 64, 128),
        box_head_width: Annotated[int, Positive] = 256,
        mask_head_layers: Sequence[int] = (64, 64),
        proposals_train: Annotated[int, Positive] = 256,  # kept after the RPN's NMS, per image
        proposals_test: Annotated[int, Positive] = 128,
        rpn_samples: Annotated[int, Positive] = 64,  # anchors sampled per image for the RPN's loss
        roi_samples: Annotated[int, Positive] = 32,  # proposals sampled per image for the box and mask losses
        score_threshold: Annotated[float, Probability] = 0.1,  # detections scoring less are dropped
        detections_per_image: Annotated[int, Positive] = 50,
    ):
        if len(anchor_sizes) != len(channels):  # one per pyramid level: the stages but the first, plus the pool
            raise ParameterError(
                "anchor_sizes", f"{len(anchor_sizes)} sizes for {len(channels)} pyramid levels; allowed: one per level"
            )
        backbone = conv_fpn_backbone(channels, fpn_channels)
        levels = [str(index) for index in range(len(channels) - 1)]  # RoIAlign pools from the stages' levels
        super().__init__(
            backbone,
            min_size=image_size,
            max_size=image_size,
            rpn_anchor_generator=AnchorGenerator(
                tuple((size,) for size in anchor_sizes), ((0.5, 1.0, 2.0),) * len(anchor_sizes)
            ),
            rpn_pre_nms_top_n_train=2 * proposals_train,
            rpn_post_nms_top_n_train=proposals_train,
            rpn_pre_nms_top_n_test=2 * proposals_test,
            rpn_post_nms_top_n_test=proposals_test,
            rpn_batch_size_per_image=rpn_samples,
            box_roi_pool=PyramidRoIAlign(levels, output_size=7, sampling_ratio=2),
            box_head=TwoMLPHead(fpn_channels * 7 * 7, box_head_width),
            box_predictor=FastRCNNPredictor(box_head_width, num_classes + 1),  # and the background
            box_batch_size_per_image=roi_samples,
            box_score_thresh=score_threshold,
            box_detections_per_img=detections_per_image,
            mask_roi_pool=PyramidRoIAlign(levels, output_size=14, sampling_ratio=2),
            mask_head=mask_rcnn.MaskRCNNHeads(fpn_channels, list(mask_head_layers), dilation=1),
            mask_predictor=mask_rcnn.MaskRCNNPredictor(mask_head_layers[-1], mask_head_layers[-1], num_classes + 1),
        )
        self.num_classes = num_classes
