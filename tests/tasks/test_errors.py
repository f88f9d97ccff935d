"""Bad input ends with exit code 2 and one line on stderr that names the problem. Two tests start the script as
a process, an error in composing and one in training; the others run the same entry in this process."""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import run_dirs, run_script


def _error_line(result) -> str:
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stderr[-3000:]}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return lines[-1]


def test_unknown_model_lists_the_available_ones(log_dir):
    line = _error_line(run_script("train", "model=resnet9000", log_dir=log_dir))
    assert line.startswith("error: model=resnet9000: no such option; available model options: ")
    assert {"cnn", "vit"} <= set(line.split(": ")[-1].split(", "))
    assert not log_dir.exists()  # nothing was started


def test_wrong_typed_override_names_the_key(log_dir, run_in_process):
    line = _error_line(run_in_process("train", "trainer.max_epochs=lots", log_dir=log_dir))
    assert "trainer.max_epochs" in line and "int" in line and "'lots'" in line


def test_value_outside_the_allowed_set_lists_them(log_dir, run_in_process):
    line = _error_line(run_in_process("train", "data=mnist", "data.source.name=imagenet", log_dir=log_dir))
    assert "data.source.name: 'imagenet' is not allowed; choose one of: mnist, fashion_mnist, cifar10" in line


def test_a_plain_value_for_a_source_object_names_the_kind_expected(log_dir, run_in_process):
    line = _error_line(run_in_process("train", "data.source=imagenet", log_dir=log_dir))
    assert line == "error: data.source: expected ImageSource, got 'imagenet' (str)"


def test_an_objective_refusing_its_net_is_one_line(log_dir, run_in_process):
    line = _error_line(run_in_process("train", "model=causal_lm", "model/net=encoder", log_dir=log_dir))
    assert line.startswith(
        "error: model.net: dlforge.nets.text.encoder.TransformerEncoder is not a Decoder, which CausalLM needs"
    )


def test_misspelt_key_names_the_allowed_ones(log_dir, run_in_process):
    line = _error_line(run_in_process("train", "+model.net.dept=3", log_dir=log_dir))
    assert "model.net.dept: not a parameter of dlforge.nets.vision.cnn.CNN" in line and "convs_per_stage" in line


def test_wrong_typed_top_level_key(log_dir, run_in_process):
    line = _error_line(run_in_process("train", "seed=abc", log_dir=log_dir))
    assert "seed" in line and "int" in line


@pytest.mark.parametrize("script", ["train", "eval"])
def test_missing_checkpoint(script, log_dir, tmp_path, run_in_process):
    missing = tmp_path / "nowhere" / "best.ckpt"
    line = _error_line(run_in_process(script, f"ckpt_path={missing}", log_dir=log_dir))
    assert line == f"error: checkpoint not found: {missing}"


def test_corrupt_checkpoint(log_dir, tmp_path, run_in_process):
    """Each kind of unreadable file is refused as corrupt by the reader every script uses; through eval.py once
    (the script's path is the same for all: one line, exit 2)."""
    from dlforge.checkpoint_file import load_checkpoint
    from dlforge.errors import CheckpointError

    for index, content in enumerate([b"", b"not a checkpoint at all", b"PK\x03\x04truncated zip"]):
        corrupt = tmp_path / f"{index}.ckpt"
        corrupt.write_bytes(content)
        with pytest.raises(CheckpointError, match=f"^checkpoint {re.escape(str(corrupt))} is corrupt"):
            load_checkpoint(corrupt)
    line = _error_line(run_in_process("eval", f"ckpt_path={corrupt}", log_dir=log_dir))
    assert line.startswith(f"error: checkpoint {corrupt} is corrupt")
    assert corrupt.read_bytes() == content  # the user's file is left as it was


def test_eval_without_checkpoint_says_which_key_is_missing(log_dir, run_in_process):
    line = _error_line(run_in_process("eval", log_dir=log_dir))
    assert "ckpt_path" in line and "issing" in line


def test_eval_split_outside_the_allowed_set(log_dir, tmp_path, run_in_process):
    line = _error_line(run_in_process("eval", f"ckpt_path={tmp_path / 'best.ckpt'}", "split=tset", log_dir=log_dir))
    assert line == "error: split: 'tset' is not allowed; choose one of: test, val"


@pytest.mark.parametrize("override", ["+splt=val", "+model=vit"])  # eval's model is the checkpoint's
def test_eval_refuses_unknown_top_level_keys(override, log_dir, tmp_path, run_in_process):
    line = _error_line(run_in_process("eval", f"ckpt_path={tmp_path / 'best.ckpt'}", override, log_dir=log_dir))
    key = override[1:].split("=")[0]
    allowed = "ckpt_path, data, logger, paths, split, task_name, trainer"
    assert line == f"error: {key}: not an option of eval; allowed: {allowed}"


def test_diverging_loss_stops_before_any_checkpoint(log_dir):
    # A learning rate this large throws the weights to ~1e30 in one AdamW step: the loss is inf or NaN next.
    line = _error_line(run_script("train", "optimizer.lr=1e30", "logger=none", log_dir=log_dir))
    assert line.startswith("error: training loss is nan at step ") and "(epoch 0); lower optimizer.lr" in line, line
    (run_dir,) = run_dirs(log_dir)
    assert not list(run_dir.glob("checkpoints/*.ckpt"))
    record = yaml.safe_load((run_dir / "lineage.yaml").read_text())  # the run's record says how it ended
    assert record["status"] == "interrupted" and record["error"] == f"TrainingDiverged: {line.removeprefix('error: ')}"
    assert not (run_dir / "metrics.json").exists()


@pytest.mark.parametrize("experiment", ["pydoc_gpt", "pydoc_transformer_cls"])
def test_too_small_vocabulary_names_the_key(experiment, log_dir, run_in_process):
    line = _error_line(
        run_in_process("train", f"experiment={experiment}", "data.vocab_size=3", "logger=none", log_dir=log_dir)
    )
    assert line == "error: data.vocab_size=3 is too small for a char tokenizer; use >= 6"


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["data.batch_size=0"], "data.batch_size: 0 is out of range; allowed: > 0"),
        (["trainer=ddp", "trainer.devices=0"], "trainer.devices: 0 is out of range; allowed: >= 1, or -1"),
        (["+seeed=1"], "seeed: not an option of train; allowed: callbacks, ckpt_path, data, debug, "),
    ],
)
def test_config_errors_stop_the_run_before_any_data_is_read(overrides, message, log_dir, tmp_path, run_in_process):
    no_data = tmp_path / "no_data"  # reading data would fail here, with another message
    result = run_in_process("train", *overrides, f"paths.data_dir={no_data}", "logger=none", log_dir=log_dir)
    line = _error_line(result)
    assert line.startswith(f"error: {message}"), line
    assert "Error executing job" not in result.stderr  # Hydra's banner: the one line is all the user sees
    assert not no_data.exists()
    (run_dir,) = run_dirs(log_dir)
    assert not (run_dir / "lineage.yaml").exists()


def test_a_batch_that_does_not_split_over_the_ddp_processes_stops_the_job_before_they_start(log_dir, run_in_process):
    result = run_in_process("train", "trainer=ddp", "data.batch_size=63", "logger=none", log_dir=log_dir)
    assert _error_line(result) == (
        "error: data.batch_size=63 does not split evenly over 2 processes (it is the batch of one step over all "
        "of them): use a multiple of 2"
    )
    assert result.stderr.count("error: ") == 1 and "Error executing job" not in result.stderr
    (run_dir,) = run_dirs(log_dir)
    assert not (run_dir / "train_ddp_process_1.log").exists()  # rank 1 never started


@pytest.mark.parametrize("overrides", [["+foo=bar"], ["+seeed=1"], ["model=gpt", "data.block_size=0"]])
def test_train_checks_the_whole_config_first(overrides, tmp_path):
    from conftest import compose, job_config
    from dlforge.errors import ConfigError
    from dlforge.tasks.train import train

    no_data = tmp_path / "no_data"
    cfg = job_config(compose("train", [*overrides, f"paths.data_dir={no_data}"], tmp_path / "run"))
    key = overrides[-1].lstrip("+").split("=")[0]
    with pytest.raises(ConfigError, match=f"^{key}: "):
        train(cfg)
    assert not no_data.exists() and not (tmp_path / "run").exists()


def test_a_constructor_error_names_the_key_of_its_node(log_dir, run_in_process):
    result = run_in_process("train", "model=gpt", "model.net.heads=3", "logger=none", log_dir=log_dir)
    assert _error_line(result) == "error: model.net.heads: 3 does not divide dim=128; allowed: a divisor of 128"
    assert "Error executing job" not in result.stderr


def test_endless_epochs_need_max_steps_for_the_schedule(log_dir, run_in_process):
    line = _error_line(
        run_in_process("train", "trainer.max_epochs=-1", "debug=limit_batches", "logger=none", log_dir=log_dir)
    )
    assert line.startswith("error: trainer.max_epochs=-1 trains without end") and "set trainer.max_steps" in line


def test_trainer_knobs_are_set_without_plus(log_dir, run_in_process):
    import torch

    result = run_in_process(
        "train",
        "debug=limit_batches",
        "trainer.max_epochs=-1",  # with max_steps the schedule has its length
        "trainer.max_steps=3",
        "trainer.gradient_clip_val=1.0",
        "trainer.accumulate_grad_batches=1",
        "trainer.val_check_interval=1.0",
        "test=false",
        "logger=none",
        log_dir=log_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_dirs(log_dir)
    (checkpoint, *_) = sorted(run_dir.glob("checkpoints/*.ckpt"))
    assert torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"] == 3
