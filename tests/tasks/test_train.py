"""End to end through the scripts, as a user runs them: learning, determinism, eval, DDP."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from conftest import assert_ok, read_metrics, run_dirs, run_script

TEST_METRICS = ("test/acc", "test/f1", "test/loss", "test/confusion_matrix")


@pytest.fixture(scope="module")
def default_cnn_runs(tmp_path_factory) -> list[Path]:
    """The default experiment (CNN on digits, seed 42), run twice."""
    log_dir = tmp_path_factory.mktemp("default_cnn") / "outputs"
    for _ in range(2):
        assert_ok(run_script("train", "logger=csv", log_dir=log_dir))
    dirs = run_dirs(log_dir)
    assert len(dirs) == 2
    return dirs


def test_default_cnn_learns_digits(default_cnn_runs):
    metrics = read_metrics(default_cnn_runs[0])
    assert metrics["test/acc"] >= 0.98, metrics
    assert sum(map(sum, metrics["test/confusion_matrix"])) == 359  # every test image counted once


def test_same_seed_gives_bit_identical_metrics(default_cnn_runs):
    first, second = (read_metrics(run_dir) for run_dir in default_cnn_runs)
    for name in (*TEST_METRICS, "best val/acc"):
        assert first[name] == second[name], name  # exact equality of the full-precision floats


def test_checkpoints_hold_tensors_and_plain_data_only(default_cnn_runs):
    checkpoints = default_cnn_runs[0] / "checkpoints"
    # best, and the training state every 500 steps and at epoch ends (21 steps each; the newest 2 kept,
    # last links to the newest)
    assert sorted(path.name for path in checkpoints.iterdir()) == [
        "best.ckpt",
        "last.ckpt",
        "step-00000399.ckpt",
        "step-00000420.ckpt",
    ]
    for path in checkpoints.iterdir():
        checkpoint = torch.load(path, weights_only=True)
        assert checkpoint["run_config"]["model"]["net"]["_target_"] == "dlforge.nets.vision.cnn.CNN"
        assert checkpoint["run_config"]["seed"] == 42
        assert "hyper_parameters" not in checkpoint  # nothing pickled: the model is rebuilt from run_config


def test_eval_reproduces_train_time_test_metrics(default_cnn_runs, tmp_path):
    train_dir = default_cnn_runs[0]
    result = run_script("eval", f"ckpt_path={train_dir / 'checkpoints' / 'best.ckpt'}", "logger=none", log_dir=tmp_path)
    assert_ok(result)
    (eval_dir,) = run_dirs(tmp_path, "eval")
    trained, evaluated = read_metrics(train_dir), read_metrics(eval_dir)
    for name in ("test/acc", "test/f1", "test/loss"):
        assert evaluated[name] == trained[name], name


@pytest.mark.parametrize("model", ["cnn", "vit"])
def test_ddp_fast_dev_run(model, log_dir):
    """Two processes (one process, fp32 and bf16, is test_models.py's, in-process)."""
    result = run_script("train", f"model={model}", "debug=fast_dev_run", "trainer=ddp", log_dir=log_dir)
    assert_ok(result)
    (run_dir,) = run_dirs(log_dir)  # one run dir, also with two DDP processes
    metrics = read_metrics(run_dir)
    assert math.isfinite(metrics["test/loss"]) and 0 <= metrics["test/acc"] <= 1
    assert (run_dir / "train_ddp_process_1.log").exists()  # rank 1 ran, in the same run dir


def test_ddp_logs_once_and_reports_metrics_over_all_data(log_dir, tmp_path):
    result = run_script("train", "trainer=ddp", "trainer.max_epochs=4", "logger=wandb", log_dir=log_dir)
    assert_ok(result)
    (run_dir,) = run_dirs(log_dir)
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1  # rank 0 only
    assert result.stdout.count("test/acc") == 1  # one summary, from rank 0
    ddp = read_metrics(run_dir)
    assert ddp["test/acc"] > 0.9
    # 359 test images on 2 ranks: the sampler pads one duplicate, so 360 are counted, synced over ranks.
    assert sum(map(sum, ddp["test/confusion_matrix"])) == 360
    # The same weights evaluated in one process agree up to that one duplicated image.
    assert_ok(run_script("eval", f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}", "logger=none", log_dir=tmp_path))
    single = read_metrics(run_dirs(tmp_path, "eval")[0])
    assert abs(single["test/acc"] - ddp["test/acc"]) <= 1 / 359 + 1e-6
