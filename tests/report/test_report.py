"""The report of a run and the comparison of runs, looked at as a person does: opened from disk in headless
Chromium with the network refused; every picture must load and nothing may be requested. Each test saves a
screenshot beside its pages (`<pytest basetemp>/screenshots*/`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from browser import look_at, needs_chromium
from conftest import ROOT, assert_ok, read_metrics, run_dirs, run_script
from dlforge.objectives.base import data_tokenizer
from dlforge.objectives.decoding import generate
from dlforge.report import figures
from dlforge.report.compare import differing_config, find_runs, overlaid_curves
from dlforge.run.load import load_run
from dlforge.tasks.compare import default_dir

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory) -> Path:
    """The default experiment, 2 epochs, no experiment logger: the report needs none."""
    log_dir = tmp_path_factory.mktemp("cnn") / "outputs"
    result = run_script("train", "trainer.max_epochs=2", "trainer.log_every_n_steps=5", "logger=none", log_dir=log_dir)
    assert_ok(result)
    (run_dir,) = run_dirs(log_dir)
    assert re.search(r"report: .*report\.html \(written in [\d.]+ s\)", result.stdout)
    return run_dir


def _words(text: str) -> str:
    return " ".join(text.split())


def test_cnn_report_shows_curves_confusion_matrix_and_predicted_digits(cnn_run, screenshots):
    seen = look_at(cnn_run / "report.html", screenshots / "cnn_report.png")
    assert seen.requests == []
    assert [image["alt"] for image in seen.images] == [
        "metric curves by step",
        "test/confusion_matrix",
        "test/predictions",
    ]
    assert all(image["loaded"] and image["width"] > 300 for image in seen.images), seen.images
    metrics = read_metrics(cnn_run)
    text = _words(seen.text)
    assert f"test/acc {metrics['test/acc']:.6g}" in text and "src/train.py paths.log_dir=" in text
    assert "class support precision recall f1" in text  # the per-class table under the confusion matrix
    supports = np.asarray(metrics["test/confusion_matrix"]).sum(1)
    assert f"0 {supports[0]} " in text and "git commit" in text and "torch 2." in text
    assert (screenshots / "cnn_report.png").stat().st_size > 50_000


def test_curves_hold_the_training_loss_and_validation_metrics(cnn_run):
    steps = [int(line.split(",")[1]) for line in (cnn_run / "curves/train/loss.csv").read_text().splitlines()[1:]]
    assert steps == list(range(5, 43, 5))  # 2 epochs of 21 steps, logged every 5
    assert len((cnn_run / "curves/val/acc.csv").read_text().splitlines()) == 3


def test_sample_pictures_carry_each_prediction():
    captions = [f"predicted {index} / true {9 - index}" for index in range(10)]
    figure = figures.image_grid(np.random.default_rng(0).normal(size=(10, 1, 8, 8)), captions)
    (axes,) = figure.axes  # one mosaic
    assert [text.get_text() for text in axes.texts] == [caption.replace(" / ", "\n") for caption in captions]


def test_gpt_report_and_tensorboard_show_generated_text(tmp_path, screenshots):
    log_dir = tmp_path / "outputs"
    assert_ok(run_script("train", "model=gpt", "debug=limit_batches", "logger=tensorboard", log_dir=log_dir))
    (run_dir,) = run_dirs(log_dir)
    seen = look_at(run_dir / "report.html", screenshots / "gpt_report.png")
    assert seen.requests == [] and all(image["loaded"] for image in seen.images)
    text = _words(seen.text)
    assert "test/generated" in text and "test/text_samples" in text and "test/ppl" in text
    (shown,) = [table for table in seen.tables if table[0] == ["prompt", "generated (greedy)"]]
    # the model's own greedy continuations of the first test windows' starts, from the tested (best) checkpoint
    run = load_run(run_dir / "checkpoints" / "best.ckpt")
    tokenizer = data_tokenizer(run.datamodule)
    run.datamodule.setup("test")
    inputs = next(iter(run.datamodule.test_dataloader()))[0]
    expected = []
    for row in inputs[:4]:
        prompt = row[:32].tolist()
        new = generate(run.model.net, prompt, 160, 0, eos_id=tokenizer.eos_id, vocab_size=tokenizer.vocab_size)
        expected.append([tokenizer.decode(prompt), tokenizer.decode(new)])
    assert shown[1:] == expected and all(continuation for _, continuation in expected)
    # the same table in TensorBoard, as Markdown text
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    (event,) = events.Tensors("test/generated/text_summary")
    markdown = event.tensor_proto.string_val[0].decode().splitlines()
    assert markdown[0] == "| prompt | generated (greedy) |" and len(markdown) == 2 + len(expected)


def _compare(*arguments: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "src" / "compare.py"), *map(str, arguments)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_compare_a_multirun_shows_the_differing_keys_and_every_curve(tmp_path, screenshots):
    log_dir = tmp_path / "outputs"
    command = [sys.executable, str(ROOT / "src" / "train.py"), "-m", f"paths.log_dir={log_dir}", "logger=none"]
    sweep = ["seed=1,2", "optimizer.lr=0.001,0.003", "debug=limit_batches", "trainer.log_every_n_steps=2"]
    assert_ok(subprocess.run([*command, *sweep], cwd=ROOT, capture_output=True, text=True, timeout=600))
    (multirun,) = (log_dir / "train" / "multiruns").iterdir()

    # runs named one by one: a new page of their own under the current dir, nothing in their common parent
    assert_ok(_compare(multirun / "0", multirun / "3", cwd=tmp_path))
    (page,) = (tmp_path / "outputs" / "compare").glob("*/comparison.html")
    assert "Comparison of 2 runs" in page.read_text() and not (multirun / "comparison.html").exists()

    result = _compare(multirun, "--markdown", cwd=tmp_path)
    assert_ok(result)
    runs, _ = find_runs([multirun])
    assert list(differing_config(runs)) == ["optimizer.lr", "seed"]
    assert {metric: len(series) for metric, series in overlaid_curves(runs).items()} == {
        metric: 4 for metric in ("train/loss", "val/acc", "val/f1", "val/loss")
    }
    header, rule, *rows = result.stdout.splitlines()[:6]
    assert header.startswith("| run | optimizer.lr | seed | best val/acc | test/acc") and len(rows) == 4
    assert rows[0].startswith("| 0 | 0.001 | 1 |") and rows[3].startswith("| 3 | 0.003 | 2 |")

    seen = look_at(multirun / "comparison.html", screenshots / "multirun_comparison.png")
    assert seen.requests == [] and [image["loaded"] for image in seen.images] == [True]
    assert "key 0 1 2 3 optimizer.lr 0.001 0.003 0.001 0.003 seed 1 1 2 2" in _words(seen.text)


def test_compare_a_sweep_shows_its_plots_and_trials_the_pruned_one_with_its_best_value(tmp_path, screenshots):
    """A grid of a good and a hopeless learning rate: the median pruner stops the second after its first epoch."""
    log_dir = tmp_path / "outputs"
    command = [sys.executable, str(ROOT / "src" / "train.py"), "-m", f"paths.log_dir={log_dir}", "logger=none"]
    sweep = tmp_path / "sweep"
    study = [
        "hydra/sweeper=dlforge_optuna",
        "hydra.sweeper.study_name=cnn_digits",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweeper.sampler={_target_:optuna.samplers.GridSampler}",
        "hydra.sweeper.pruner={_target_:optuna.pruners.MedianPruner,n_startup_trials:1,n_warmup_steps:0}",
        "optimizer.lr=3e-3,1e-9",
        "trainer.max_epochs=2",
        "test=false",
    ]
    assert_ok(subprocess.run([*command, *study], cwd=ROOT, capture_output=True, text=True, timeout=600))
    pruned = yaml.safe_load((sweep / "trial_1" / "lineage.yaml").read_text())
    assert pruned["status"] == "pruned" and pruned["error"].startswith("pruned at epoch 0: val/acc=")
    best = pruned["metrics"]["best val/acc"]
    assert pruned["error"] == f"pruned at epoch 0: val/acc={best:.6g}"  # what the pruner judged, and the best

    result = _compare(sweep, "--markdown", cwd=tmp_path)
    assert_ok(result)
    assert f"| trial_1 | 1e-09 | {best:.6g} |" in result.stdout.splitlines()
    seen = look_at(sweep / "comparison.html", screenshots / "sweep_comparison.png")
    assert seen.requests == [] and all(image["loaded"] for image in seen.images)
    alts = [image["alt"] for image in seen.images]
    assert alts[0] == "every run's curves, overlaid" and "optimization history" in alts
    text = _words(seen.text)
    assert "Sweep cnn_digits" in text and "best: trial 0" in text
    assert [row[2] for row in seen.tables[0][1:]] == ["finished", "pruned"]  # each run's status
    assert (sweep / "trial_1" / "report.html").is_file()


def test_compare_refuses_what_holds_no_runs(tmp_path):
    result = _compare(tmp_path, cwd=tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr
        == f"error: {tmp_path}: not a run dir, nor a multirun or sweep dir holding run dirs (with lineage.yaml)\n"
    )


def test_compare_of_runs_without_a_common_parent_writes_beside_the_user(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    written = Path(default_dir([Path("/srv/a/run"), Path("/home/b/run")]))
    assert written.parent == Path("outputs") / "compare" and (tmp_path / written).is_dir()
