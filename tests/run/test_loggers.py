"""TensorBoard and MLflow beside W&B: one run's scalars, pictures, config and lineage read back with each
tool's own reader (TensorBoard's event accumulator, MLflow's client); one event dir and one MLflow run per
training run, under DDP, in a multirun and across a resume (one W&B run too, under DDP and in a multirun)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from matplotlib.image import imread

from conftest import ROOT, assert_ok, read_metrics, run_dirs, run_script, script_env, when_saved
from wandb_offline import offline_runs, read_offline_run

LOGGERS = "logger=[tensorboard,mlflow,csv]"
# The DDP run and the multirun take W&B (offline) too: one run each checks all four loggers.
WITH_WANDB = ["logger=[tensorboard,mlflow,csv,wandb]", "logger.wandb.mode=offline"]


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> Path:
    """A short CNN run with three loggers, logging every 2 steps."""
    log_dir = tmp_path_factory.mktemp("loggers") / "outputs"
    assert_ok(run_script("train", LOGGERS, "debug=limit_batches", "trainer.log_every_n_steps=2", log_dir=log_dir))
    (run_dir,) = run_dirs(log_dir)
    return run_dir


def _events(directory: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # one TensorBoard run: event files (Lightning closes the writer after fitting, testing opens the next) in one
    # dir, no version subdirs
    assert list(directory.glob("events.out.tfevents.*")) and not [path for path in directory.iterdir() if path.is_dir()]
    events = EventAccumulator(str(directory), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def _mlflow_runs(log_dir: Path) -> list:
    from mlflow import MlflowClient

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # as for `mlflow ui` on the file store (README)
    client = MlflowClient(tracking_uri=f"file:{log_dir / 'mlruns'}")
    experiment = client.get_experiment_by_name("dlforge")
    return client, client.search_runs([experiment.experiment_id])


def test_tensorboard_holds_the_scalars_images_and_text(logged):
    events = _events(logged / "tensorboard")
    metrics = read_metrics(logged)
    tags = events.Tags()
    assert {"train/loss", "val/acc", "val/loss", "test/acc", "test/loss"} <= set(tags["scalars"])
    (test_acc,) = events.Scalars("test/acc")
    assert test_acc.value == pytest.approx(metrics["test/acc"], rel=1e-6)
    assert len(events.Scalars("train/loss")) == 5  # 10 steps, logged every 2
    for key in ("test/confusion_matrix", "test/predictions"):
        (image,) = events.Images(key)
        on_disk = imread(logged / "media" / f"{key}.png")
        assert (image.height, image.width) == on_disk.shape[:2] and image.encoded_image_string.startswith(b"\x89PNG")
    hparams = yaml.safe_load((logged / "tensorboard" / "hparams.yaml").read_text())  # the config, beside the events
    assert hparams["model"]["net"]["_target_"] == "dlforge.nets.vision.cnn.CNN"


def test_mlflow_run_holds_the_scalars_config_lineage_and_images(logged, tmp_path):
    client, (run,) = _mlflow_runs(logged.parents[2])
    metrics = read_metrics(logged)
    record = yaml.safe_load((logged / "lineage.yaml").read_text())
    assert run.data.metrics["test/acc"] == pytest.approx(metrics["test/acc"], rel=1e-6)
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 5
    assert run.data.params["model/net/_target_"] == "dlforge.nets.vision.cnn.CNN"
    assert run.data.params["trainer/limit_train_batches"] == "5"
    tags = run.data.tags
    assert tags["git.commit"] == record["git"]["commit"] and tags["data.md5"] == record["data"]["md5"]
    assert tags["hardware.world_size"] == "1" and tags["status"] == "finished" and tags["run_dir"] == str(logged)
    assert tags["checkpoint.best"] == (logged / "checkpoints" / "best.ckpt").as_uri()  # by reference, not copied
    assert run.info.run_name == logged.name
    downloaded = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path)))
    assert yaml.safe_load((downloaded / "lineage.yaml").read_text())["git"] == record["git"]
    for key in ("test/confusion_matrix", "test/predictions"):
        assert imread(downloaded / f"{key}.png").shape == imread(logged / "media" / f"{key}.png").shape
    assert not list(downloaded.rglob("*.ckpt"))


def test_csv_beside_them_gets_the_same_scalars(logged):
    header = (logged / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "val/acc", "test/acc"} <= set(header)


def test_ddp_makes_one_event_dir_one_mlflow_run_and_one_wandb_run(log_dir):
    """The default CNN in two processes (its BatchNorm buffers are what DDP broadcasts; one process is
    test_models.py's): one run dir, tested over both."""
    assert_ok(run_script("train", "trainer=ddp", *WITH_WANDB, "debug=limit_batches", log_dir=log_dir))
    (run_dir,) = run_dirs(log_dir)
    metrics = read_metrics(run_dir)
    assert math.isfinite(metrics["test/loss"]) and 0 <= metrics["test/acc"] <= 1
    assert _events(run_dir / "tensorboard").Tags()["scalars"]
    client, (run,) = _mlflow_runs(log_dir)
    assert run.data.tags["hardware.world_size"] == "2" and "test/acc" in run.data.metrics
    (wandb_dir,) = offline_runs(run_dir)  # rank 0's only
    offline = read_offline_run(wandb_dir)
    assert offline.finished and offline.config["hardware"]["world_size"] == 2
    assert offline.config["status"] == "finished"
    assert (run_dir / "report.html").is_file()
    assert (run_dir / "train_ddp_process_1.log").exists()


def test_multirun_jobs_are_one_mlflow_run_event_dir_and_wandb_run_each(log_dir):
    command = [sys.executable, str(ROOT / "src" / "train.py"), "-m", f"paths.log_dir={log_dir}", "seed=1,2"]
    result = subprocess.run(
        [*command, *WITH_WANDB, "debug=limit_batches"],
        cwd=ROOT,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert_ok(result)
    (sweep,) = (log_dir / "train" / "multiruns").iterdir()
    client, runs = _mlflow_runs(log_dir)
    by_dir = {run.data.tags["run_dir"]: run for run in runs}
    assert sorted(by_dir) == [str(sweep / "0"), str(sweep / "1")]
    assert {run.data.tags["group"] for run in runs} == {f"train-multirun-{sweep.name}"}
    assert [json.loads(by_dir[str(sweep / job)].data.params["seed"]) for job in "01"] == [1, 2]
    for job in "01":
        assert _events(sweep / job / "tensorboard").Scalars("test/acc")
        assert (sweep / job / "report.html").is_file()
    wandb_runs = [read_offline_run(path) for job in "01" for path in offline_runs(sweep / job)]
    assert len(wandb_runs) == 2 and all(run.finished for run in wandb_runs)
    assert wandb_runs[0].run_id != wandb_runs[1].run_id
    assert wandb_runs[0].group == wandb_runs[1].group == f"train-multirun-{sweep.name}"
    assert [run.config["seed"] for run in wandb_runs] == [1, 2]


def test_a_resumed_run_continues_its_mlflow_run_and_event_dir(log_dir):
    """Stopped (SIGTERM) after its step-3 checkpoint and resumed: one MLflow run and one event dir hold the
    training loss of every step, of both parts, once each."""
    run_dir = log_dir / "run"
    command = [sys.executable, str(ROOT / "src" / "train.py"), f"paths.log_dir={log_dir}", f"hydra.run.dir={run_dir}"]
    run = [LOGGERS, "debug=limit_batches", "trainer.max_epochs=4", "trainer.log_every_n_steps=1"]
    every_3_steps = "callbacks.resume_checkpoints.every_n_steps=3"
    process = subprocess.Popen(
        [*command, *run, every_3_steps], cwd=ROOT, env=script_env(), stdout=subprocess.PIPE, text=True
    )
    when_saved(process, run_dir / "checkpoints" / "step-00000003.ckpt")
    process.send_signal(signal.SIGTERM)
    assert process.wait() == 0
    assert yaml.safe_load((run_dir / "lineage.yaml").read_text())["status"] == "preempted"
    assert_ok(run_script("train", f"resume={run_dir}", log_dir=log_dir))

    record = yaml.safe_load((run_dir / "lineage.yaml").read_text())
    assert record["status"] == "finished" and 3 <= record["resumes"][0]["step"] < 20
    steps = list(range(20))  # 4 epochs of 5 steps, logged as Lightning numbers them
    client, (mlflow_run,) = _mlflow_runs(log_dir)
    assert mlflow_run.info.run_id == record["mlflow"]["run_id"] and mlflow_run.info.status == "FINISHED"
    assert sorted(point.step for point in client.get_metric_history(mlflow_run.info.run_id, "train/loss")) == steps
    assert "test/acc" in mlflow_run.data.metrics
    events = _events(run_dir / "tensorboard")
    assert [event.step for event in events.Scalars("train/loss")] == steps
    assert [event.step for event in events.Scalars("val/acc")] == [4, 9, 14, 19]
