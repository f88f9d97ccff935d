"""End to end through the scripts, as a user runs them: learning, determinism, eval, DDP."""

from __future__ import annotations

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


def test_eval_replaces_keys_of_the_run_data_config_and_refuses_keys_it_lacks(
    default_cnn_runs, tmp_path, run_in_process
):
    """`+data.test_fraction=0.5`: the same model tested on half the digits instead of the run's 20 %."""
    checkpoint = f"ckpt_path={default_cnn_runs[0] / 'checkpoints' / 'best.ckpt'}"
    assert_ok(run_in_process("eval", checkpoint, "+data.test_fraction=0.5", "logger=none", log_dir=tmp_path / "half"))
    (eval_dir,) = run_dirs(tmp_path / "half", "eval")
    metrics = read_metrics(eval_dir)
    assert sum(map(sum, metrics["test/confusion_matrix"])) == 898  # not the run's 359
    assert metrics["test/acc"] >= 0.95
    result = run_in_process("eval", checkpoint, "+data.test_fracton=0.5", "logger=none", log_dir=tmp_path / "typo")
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("error: data.test_fracton: not a key of the run's data config (_target_, augment, batch_size, ")
    )


def test_ddp_takes_the_optimizer_steps_of_one_process(log_dir, tmp_path):
    """data.batch_size is the batch of a step over all processes: 2 take the steps 1 takes, to float
    tolerance. A small ViT (no BatchNorm, no dropout: per-process batch statistics or masks would differ) that
    learns in 42 steps (lr 1e-2): agreement near chance level would say little."""
    overrides = ["model=vit", "model.net.dim=32", "model.net.depth=1", "optimizer.lr=1e-2", "trainer.max_epochs=2"]
    overrides += ["trainer.log_every_n_steps=1", "callbacks.resume_checkpoints.every_n_steps=1"]
    overrides += ["callbacks.resume_checkpoints.keep=50"]
    single_logs = tmp_path / "single"
    assert_ok(run_script("train", *overrides, "logger=none", log_dir=single_logs))
    result = run_script("train", *overrides, "trainer=ddp", "logger=wandb", log_dir=log_dir)
    assert_ok(result)
    (single_dir,), (run_dir,) = run_dirs(single_logs), run_dirs(log_dir)
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1  # rank 0 only
    assert result.stdout.count("test/acc") == 1  # one summary, from rank 0

    single_step, ddp_step = (
        torch.load(d / "checkpoints" / "step-00000001.ckpt", weights_only=True)["state_dict"]
        for d in (single_dir, run_dir)
    )
    assert single_step.keys() == ddp_step.keys()
    ranks = torch.load(run_dir / "checkpoints" / "step-00000001.ckpt", weights_only=True)["exact_resume"]
    # seeded alike (the same initial weights), each process then draws its own dropout masks and augmentations
    assert len(ranks) == 2 and not torch.equal(ranks[0]["rng"]["torch"], ranks[1]["rng"]["torch"])
    for name, value in single_step.items():
        # AdamW's first update is lr (5e-3 at warmup's first step) times the gradient's sign wherever the
        # gradient is well above eps; where it is near 0, float noise in it moves the update by a fraction of lr
        torch.testing.assert_close(ddp_step[name], value, rtol=0, atol=5e-5)
    # the loss of every step of the first epoch (all batches but its last, which the sampler pads under
    # DDP: 1295 training images are odd), averaged over the processes
    single_loss, ddp_loss = (
        [float(row.split(",")[2]) for row in (d / "curves" / "train" / "loss.csv").read_text().splitlines()[1:]]
        for d in (single_dir, run_dir)
    )
    assert len(single_loss) == len(ddp_loss) == 42  # 2 epochs of 21 steps: the same optimizer steps
    torch.testing.assert_close(torch.tensor(ddp_loss[:20]), torch.tensor(single_loss[:20]), rtol=1e-4, atol=1e-5)

    single, ddp = read_metrics(single_dir), read_metrics(run_dir)
    assert sum(map(sum, ddp["test/confusion_matrix"])) == 359  # every test image once, over both processes
    assert single["test/acc"] > 0.7
    assert abs(single["test/acc"] - ddp["test/acc"]) <= 2 / 359 + 1e-6
    assert ddp["test/loss"] == pytest.approx(single["test/loss"], rel=1e-2)
