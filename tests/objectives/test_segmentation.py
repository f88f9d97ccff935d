"""Semantic segmentation on a few scenes: the mIoU against a confusion matrix counted here, learning and
chance level, eval reproducing the run's test metrics, weights-only checkpoints, pictures, DDP."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import VALIDATE_EACH_EPOCH, assert_ok, compose, job_config, read_metrics, run_dirs, run_script
from dlforge.config.build import build_datamodule, build_model
from dlforge.objectives.segmentation import IGNORE

# A few scenes (written once beside the default set), batches of 8, no loader process.
FEW_SCENES = [
    "data.source.train=16",
    "data.source.val=8",
    "data.source.test=8",
    "data.batch_size=8",
    "data.eval_batch_size=8",
    "data.num_workers=0",
    "logger=none",
]
SMALL = ["experiment=scenes_unet", *FEW_SCENES, "model.net.channels=[8,16,32]"]  # a narrow U-Net
SMALL += VALIDATE_EACH_EPOCH


def reference_iou(predicted: np.ndarray, true: np.ndarray, classes: int) -> tuple[float, np.ndarray]:
    """VOC's mIoU, counted here: one confusion matrix over all pixels not labelled 255; each class's
    intersection over union; their mean over the classes in the targets or the predictions."""
    kept = true != IGNORE
    counts = np.bincount(classes * true[kept] + predicted[kept], minlength=classes * classes).reshape(classes, classes)
    intersection, union = np.diag(counts), counts.sum(0) + counts.sum(1) - np.diag(counts)
    iou = np.divide(intersection, union, out=np.zeros(classes), where=union > 0)
    return float(iou[union > 0].mean()), iou


def test_criterion_is_cross_entropy_plus_batch_dice_with_void_left_out():
    """The loss equals cross-entropy plus nnU-Net's batch soft Dice written out with one-hot targets, in value
    and gradient, with void pixels in the targets and a class absent from them."""
    from dlforge.nets.vision.unet import UNet
    from dlforge.objectives.segmentation import SemanticSegmentation

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 12, 10, generator=generator, requires_grad=True)
    masks = torch.randint(0, 4, (3, 12, 10), generator=generator)  # class 4 never occurs
    masks[:, ::3] = IGNORE
    kept = (masks != IGNORE).unsqueeze(1)
    probs = logits.softmax(1) * kept
    one_hot = torch.nn.functional.one_hot(masks.masked_fill(~kept[:, 0], 0), 5).movedim(-1, 1) * kept
    dice = (2 * (probs * one_hot).sum((0, 2, 3)) + 1) / (probs.sum((0, 2, 3)) + one_hot.sum((0, 2, 3)) + 1)
    expected = torch.nn.functional.cross_entropy(logits, masks, ignore_index=IGNORE) + 0.5 * (1 - dice.mean())
    (expected_grad,) = torch.autograd.grad(expected, logits)

    loss = SemanticSegmentation(UNet(5), dice_weight=0.5).criterion(logits, masks)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(torch.autograd.grad(loss, logits)[0], expected_grad)


# A narrow Mask R-CNN, 3 epochs of 2 batches: its eval still pastes and scores masks.
TINY_MASKRCNN = ["experiment=scenes_maskrcnn", *FEW_SCENES, "model.net.channels=[8,16,32,64]"]
TINY_MASKRCNN += ["model.net.fpn_channels=16", "model.net.box_head_width=32", "model.net.mask_head_layers=[16]"]
TINY_MASKRCNN += ["trainer.max_epochs=3", "++trainer.limit_train_batches=2"]


def trained(tmp_path_factory, name: str, overrides: list[str]) -> Path:
    """The run dir of a run with `overrides`, trained and tested in this process."""
    from dlforge.tasks.train import train

    log_dir = tmp_path_factory.mktemp(name)
    train(job_config(compose("train", [*overrides, f"paths.log_dir={log_dir}"], log_dir / "run")))
    return log_dir / "run"


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory) -> Path:
    """A short run of the U-Net on the few scenes (20 steps)."""
    return trained(tmp_path_factory, "unet", [*SMALL, "trainer.max_epochs=10"])


@pytest.fixture(scope="module")
def maskrcnn_run(tmp_path_factory) -> Path:
    return trained(tmp_path_factory, "maskrcnn", TINY_MASKRCNN)


def test_miou_is_the_confusion_matrix_mean_over_the_split(unet_run: Path):
    """The logged test mIoU and per-class IoU are those counted here from the best checkpoint's predictions."""
    from dlforge.run.load import load_run

    run = load_run(unet_run / "checkpoints" / "best.ckpt")
    run.datamodule.setup("test")
    predicted, true = [], []
    with torch.no_grad():
        for images, masks in run.datamodule.test_dataloader():
            predicted.append(run.model(images).argmax(1))
            true.append(masks)
    classes = run.model.net.num_classes
    miou, iou = reference_iou(torch.cat(predicted).numpy(), torch.cat(true).numpy(), classes)
    assert (torch.cat(true) == IGNORE).any()  # the void band is there, and ignored
    metrics = read_metrics(unet_run)
    assert metrics["test/miou"] == pytest.approx(miou, abs=1e-6)
    assert list(metrics["test/iou"]) == run.datamodule.categories  # by class name, background first
    np.testing.assert_allclose(list(metrics["test/iou"].values()), iou, atol=1e-6)
    assert 0 <= metrics["test/pixel_acc"] <= 1 and math.isfinite(metrics["test/loss"])


@pytest.mark.parametrize(
    "run,scores",
    [
        ("unet_run", ["test/miou", "test/pixel_acc", "test/loss"]),
        ("maskrcnn_run", ["test/segm_map", "test/segm_map_50", "test/map", "test/map_50", "test/mar_100"]),
    ],
    ids=["unet", "maskrcnn"],
)
def test_eval_reproduces_train_time_test_metrics(run: str, scores: list[str], request, tmp_path: Path):
    """eval.py on the best checkpoint writes the very metrics (and per-class scores) the run's test wrote."""
    from dlforge.tasks.evaluate import evaluate

    run_dir = request.getfixturevalue(run)
    checkpoint = run_dir / "checkpoints" / "best.ckpt"
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()  # Hydra makes a run dir; in this process nothing does
    evaluated = evaluate(job_config(compose("eval", [f"ckpt_path={checkpoint}", "logger=none"], eval_dir)))
    trained = read_metrics(run_dir)
    for name in scores:
        assert evaluated[name] == trained[name], name
    per_class = "test/iou" if run == "unet_run" else "test/segm_ap_per_class"
    assert read_metrics(eval_dir)[per_class] == trained[per_class]


def test_checkpoints_load_weights_only(unet_run: Path):
    checkpoint = torch.load(unet_run / "checkpoints" / "best.ckpt", weights_only=True)
    assert checkpoint["run_config"]["model"]["net"]["_target_"] == "dlforge.nets.vision.unet.UNet"
    assert "hyper_parameters" not in checkpoint


def test_pictures_and_class_table_are_written(unet_run: Path):
    with Image.open(unet_run / "media" / "test" / "segmentation.png") as picture:
        picture.verify()
    table = (unet_run / "media" / "test" / "iou.json").read_text()
    assert '"background"' in table and '"Ankle boot"' in table
    assert "test/segmentation" in (unet_run / "report.html").read_text()


def test_unet_overfits_a_few_scenes_and_random_weights_score_low(tmp_path: Path):
    """Fitted to 4 scenes (150 steps), a small U-Net labels their pixels with mIoU > 0.6 (0.73-0.99 seen);
    its random initial weights score < 0.1 on them."""
    cfg = compose("train", [*SMALL, "data.augment=false", f"paths.log_dir={tmp_path}"], tmp_path / "run")
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    images, masks = (part[:4] for part in next(iter(datamodule.train_dataloader())))
    torch.manual_seed(0)
    model = build_model(cfg, for_training=False)

    def miou() -> float:
        model.eval()
        with torch.no_grad():
            predicted = model(images).argmax(1)
        model.train()
        return reference_iou(predicted.numpy(), masks.numpy(), model.net.num_classes)[0]

    assert miou() < 0.1
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2)
    for _ in range(150):
        optimizer.zero_grad()
        model.criterion(model(images), masks).backward()
        optimizer.step()
    assert miou() > 0.6


DETECTION_SCORES = [f"test/{kind}{name}" for kind in ("", "segm_") for name in ("map", "map_50", "map_75", "mar_100")]


@pytest.mark.parametrize(
    "overrides,scores",
    [(SMALL, ["test/miou"]), (["experiment=scenes_maskrcnn", *FEW_SCENES], DETECTION_SCORES)],
    ids=["unet", "maskrcnn"],
)
def test_ddp_fast_dev_run(overrides: list[str], scores: list[str], tmp_path: Path):
    """Two processes (one, in fp32 and bf16, is test_models.py's): one run dir, test scores over both. Mask
    R-CNN's are the detection objective's mAP of boxes and masks, gathered over the ranks (what DDP changes in
    that objective, for every detector)."""
    result = run_script("train", *overrides, "debug=fast_dev_run", "trainer=ddp", log_dir=tmp_path)
    assert_ok(result)
    (run_dir,) = run_dirs(tmp_path)
    metrics = read_metrics(run_dir)
    assert all(0 <= metrics[score] <= 1 for score in scores), metrics
    assert (run_dir / "train_ddp_process_1.log").exists()
