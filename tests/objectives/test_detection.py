"""Detection: the objective's mAP is pycocotools' own COCOeval on the same predictions (boxes and masks), a
YOLO overfits 8 scenes where random weights score nothing, eval.py reproduces a run's test metrics from its
weights-only checkpoint, and the pictures are written (two DDP processes, the mAP gathered over both, are Mask
R-CNN's in test_segmentation.py: the objective's DDP path, with boxes and masks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from PIL import Image
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn
from torch.utils.data import DataLoader
from torchvision.datasets import FashionMNIST

from conftest import FEW_TEST_SCENES, VALIDATE_EACH_EPOCH, assert_ok, compose, read_metrics, run_dirs, run_script
from dlforge.checkpoint_file import load_checkpoint
from dlforge.config.build import build_datamodule
from dlforge.errors import CheckpointError, ConfigError
from dlforge.nets.vision.yolo import YOLO
from dlforge.objectives.detection import Detection
from dlforge.objectives.pretrained import load_pretrained_net

SIZE, CLASSES = 64, 3


def scene(image_id: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """An image with 1-4 rectangles of random classes, its targets, masks filling each box's left part."""
    generator = torch.Generator().manual_seed(image_id)
    count = int(torch.randint(1, 5, (1,), generator=generator))
    corners = torch.randint(0, SIZE - 20, (count, 2), generator=generator).float()
    sizes = torch.randint(6, 20, (count, 2), generator=generator).float()
    boxes = torch.cat([corners, corners + sizes], 1)
    masks = torch.zeros(count, SIZE, SIZE, dtype=torch.uint8)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist()):
        mask[y0:y1, x0 : (x0 + x1) // 2 + 1] = 1
    labels = torch.randint(1, CLASSES + 1, (count,), generator=generator)
    target = {"boxes": boxes, "labels": labels, "masks": masks, "iscrowd": torch.zeros(count, dtype=torch.int64)}
    return torch.rand(3, SIZE, SIZE, generator=generator), target | {"image_id": torch.tensor(image_id)}


class NoisyOracle(nn.Module):
    """A Detector that finds the objects of the scenes `image_ids` (given batch after batch, in order) with
    jittered boxes and masks, a fifth of them with a wrong class, plus two false alarms per image, all with
    random scores; what it answered is kept in `answers` by image id."""

    num_classes = CLASSES
    predicts_masks = True

    def __init__(self, image_ids: list[int]):
        super().__init__()
        self.pending = iter(image_ids)
        self.answers: dict[int, dict[str, torch.Tensor]] = {}

    def forward(self, images, targets=None):
        found = []
        for _ in images:
            image_id = next(self.pending)
            target = scene(image_id)[1]
            generator = torch.Generator().manual_seed(1000 + image_id)
            count = len(target["boxes"])
            corners = torch.rand(2, 2, generator=generator) * (SIZE - 25)
            alarms = torch.cat([corners, corners + 5 + torch.rand(2, 2, generator=generator) * 20], 1)
            shifts = torch.randint(-1, 2, (count, 2), generator=generator).tolist()
            masks = [mask.float().roll(shift, (0, 1)) * 0.9 for mask, shift in zip(target["masks"], shifts)]
            masks = torch.cat([torch.stack(masks), torch.full((2, SIZE, SIZE), 0.4)])
            masks[-2:, :10, :10] = 0.6  # the false alarms' masks
            wrong = torch.rand(count, generator=generator) < 0.2
            self.answers[image_id] = {
                "boxes": torch.cat([target["boxes"] + torch.randn(count, 4, generator=generator) * 1.5, alarms]),
                "scores": torch.rand(count + 2, generator=generator),
                "labels": torch.cat(
                    [
                        torch.where(wrong, target["labels"] % CLASSES + 1, target["labels"]),
                        torch.randint(1, CLASSES + 1, (2,), generator=generator),
                    ]
                ),  # fmt: skip
                "masks": masks[:, None],  # probabilities, objects' masks moved by up to a pixel
            }
            found.append(self.answers[image_id])
        return found


def collate(items):
    return torch.stack([image for image, _ in items]), [target for _, target in items]


def test_map_equals_pycocotools_cocoeval_on_the_same_predictions(tmp_path: Path):
    """Boxes and masks: map, map_50, map_75, mar_100 and each class's AP, as COCOeval computes them on the
    predictions and ground truth written as COCO JSON (RLE masks)."""
    image_ids = list(range(1, 13))
    net = NoisyOracle(image_ids)
    objective = Detection(net)
    loader = DataLoader([scene(image_id) for image_id in image_ids], batch_size=4, collate_fn=collate)
    (metrics,) = Trainer(logger=False, enable_progress_bar=False).test(objective, loader, verbose=False)

    ground_truth = {
        "images": [{"id": image_id, "width": SIZE, "height": SIZE} for image_id in image_ids],
        "categories": [{"id": label} for label in range(1, CLASSES + 1)],
        "annotations": [],
    }
    results = {"bbox": [], "segm": []}
    for image_id in image_ids:
        target = scene(image_id)[1]
        for box, label, mask in zip(target["boxes"].tolist(), target["labels"].tolist(), target["masks"]):
            x0, y0, x1, y1 = box
            rle = coco_mask.encode(np.asfortranarray(mask.numpy()))
            rle["counts"] = rle["counts"].decode()
            ground_truth["annotations"].append(
                {
                    "id": len(ground_truth["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": label,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "segmentation": rle,
                    "iscrowd": 0,
                }
            )
        found = net.answers[image_id]
        answers = zip(found["boxes"].tolist(), found["scores"].tolist(), found["labels"].tolist(), found["masks"])
        for box, score, label, mask in answers:
            x0, y0, x1, y1 = box
            common = {"image_id": image_id, "category_id": label, "score": score}
            results["bbox"].append(common | {"bbox": [x0, y0, x1 - x0, y1 - y0]})
            rle = coco_mask.encode(np.asfortranarray((mask[0] > 0.5).numpy().astype(np.uint8)))
            results["segm"].append(common | {"segmentation": rle | {"counts": rle["counts"].decode()}})
    (tmp_path / "instances.json").write_text(json.dumps(ground_truth))
    coco = COCO(str(tmp_path / "instances.json"))
    per_class = {artifact.key: artifact.scores for artifact in objective.test_artifacts()}
    for iou_type, prefix in (("bbox", ""), ("segm", "segm_")):
        (tmp_path / f"{iou_type}.json").write_text(json.dumps(results[iou_type]))
        evaluation = COCOeval(coco, coco.loadRes(str(tmp_path / f"{iou_type}.json")), iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        reference = dict(zip(["map", "map_50", "map_75"], evaluation.stats[:3])) | {"mar_100": evaluation.stats[8]}
        for name, value in reference.items():
            # a score that a wrong matching or a wrong threshold would move
            assert 0.05 < value < 0.95, (iou_type, reference)
            assert metrics[f"test/{prefix}{name}"] == pytest.approx(value, abs=1e-6), f"{prefix}{name}"
        for label in range(1, CLASSES + 1):
            evaluation.params.catIds = [label]
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
            ours = per_class[f"test/{prefix}ap_per_class"][f"class {label}"]
            assert ours == pytest.approx(evaluation.stats[0], abs=1e-6), f"{prefix}AP of class {label}"


@pytest.fixture(scope="module")
def eight_scenes(tmp_path_factory):
    """The first 8 scenes of the train split, unaugmented, as one batch."""
    log_dir = tmp_path_factory.mktemp("scenes")
    overrides = ["data=scenes", *FEW_TEST_SCENES, "data.masks=false", f"paths.log_dir={log_dir}"]
    cfg = compose("train", overrides, log_dir / "run")
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule.collate([datamodule.splits["train"][index] for index in range(8)])


def map_50(net: nn.Module, batch) -> float:
    objective = Detection(net).eval()
    with torch.no_grad():
        objective._update(objective.test_map, batch)
    return objective.test_map.compute()["map_50"].item()


def test_yolo_overfits_eight_scenes_where_random_weights_score_nothing(eight_scenes):
    images, targets = eight_scenes
    torch.manual_seed(0)
    net = YOLO(num_classes=10, width=8, neck_channels=32)
    assert map_50(net, eight_scenes) < 0.05
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
    net.train()
    for _ in range(60):
        loss = sum(net(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert map_50(net, eight_scenes) > 0.95


TINY = ["experiment=scenes_yolo", *FEW_TEST_SCENES, "model.net.width=4", "model.net.neck_channels=16"]
TINY += ["data.batch_size=8"]
TINY += ["data.eval_batch_size=16", "data.num_workers=0", "trainer.max_epochs=1"]
TINY += VALIDATE_EACH_EPOCH
CAPS = ["++trainer.limit_train_batches=4", "++trainer.limit_val_batches=1", "++trainer.limit_test_batches=2"]


def test_eval_reproduces_the_test_metrics_from_a_weights_only_checkpoint(tmp_path: Path):
    train_logs = tmp_path / "train"
    assert_ok(run_script("train", *TINY, *CAPS, "logger=none", log_dir=train_logs))
    (train_dir,) = run_dirs(train_logs)
    best = train_dir / "checkpoints" / "best.ckpt"
    assert torch.load(best, weights_only=True)["run_config"]["model"]["net"]["_target_"].endswith("yolo.YOLO")
    trained = read_metrics(train_dir)
    assert set(trained["test/ap_per_class"]) <= set(FashionMNIST.classes)  # per class, by name
    pictures = sorted((train_dir / "media" / "test").iterdir())
    assert [path.name for path in pictures] == ["ap_per_class.json", "detections.png"]
    with Image.open(pictures[1]) as picture:
        picture.verify()  # a whole, valid PNG
    assert_ok(run_script("eval", f"ckpt_path={best}", CAPS[-1], "logger=none", log_dir=tmp_path / "eval"))
    (eval_dir,) = run_dirs(tmp_path / "eval", "eval")
    evaluated = read_metrics(eval_dir)
    for name in ("test/map", "test/map_50", "test/map_75", "test/mar_100", "test/ap_per_class"):
        assert evaluated[name] == trained[name], name


def test_yolo_starts_from_its_features_pretrained_on_the_scenes_objects(run_in_process, tmp_path: Path):
    """experiment=scenes_objects, then scenes_yolo_pretrained from its checkpoint: with a learning rate of ~0 the
    detector's features end as they started, as the classifier's."""
    capped = [*FEW_TEST_SCENES, "data.num_workers=0", "logger=none", "test=false", "trainer.max_steps=2"]
    capped += VALIDATE_EACH_EPOCH
    assert_ok(run_in_process("train", "experiment=scenes_objects", *capped, log_dir=tmp_path / "objects"))
    (objects_dir,) = run_dirs(tmp_path / "objects")
    pretrained = objects_dir / "checkpoints" / "best.ckpt"
    detection = ["experiment=scenes_yolo_pretrained", *capped, "data.batch_size=8", "optimizer.lr=1e-30"]
    assert_ok(run_in_process("train", *detection, f"model.pretrained={pretrained}", log_dir=tmp_path / "yolo"))
    (yolo_dir,) = run_dirs(tmp_path / "yolo")
    features = load_checkpoint(pretrained)["state_dict"]
    detector = load_checkpoint(yolo_dir / "checkpoints" / "best.ckpt")["state_dict"]
    parameters = [name for name, _ in YOLO(10, width=12, neck_channels=48).features.named_parameters()]
    assert all(torch.equal(detector[f"net.features.{name}"], features[f"net.{name}"]) for name in parameters)

    without = run_in_process("train", *detection, log_dir=tmp_path / "without")
    assert without.returncode != 0
    assert "model.pretrained_part=features takes its weights from model.pretrained, which is null" in without.stderr
    with pytest.raises(CheckpointError, match=r"does not fit model.net.features: .*in the checkpoint but"):
        load_pretrained_net(YOLO(10, width=16, neck_channels=48), pretrained, part="features")
    with pytest.raises(ConfigError, match="model.pretrained_part=neck: YOLO has no such part"):
        Detection(YOLO(10), pretrained_part="neck")
