"""Experiment tracking: the lineage record, no leaked secrets, W&B offline runs (a single run; in a multirun and
under DDP beside the other loggers: test_loggers.py), bit-exact resume after SIGKILL and SIGTERM, corrupt
checkpoints, `reproduce`, run dirs."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, assert_ok, identical, read_metrics, run_dirs, run_script, script_env, when_saved
from dlforge.callbacks.checkpoints import step_checkpoints
from dlforge.checkpoint_file import load_checkpoint
from dlforge.data.tensors import TensorBatches, batch_loader
from dlforge.errors import CheckpointError, ConfigError
from dlforge.run.checkpoints import newest_good_checkpoint
from dlforge.run.lineage import redact
from dlforge.run.resume import resume_point
from dlforge.run.rundir import fresh_dir
from wandb_offline import offline_runs, read_offline_run

# A small CNN for 2 epochs of 21 steps, with augmentation and dropout, so a resumed run must get
# the sampler's position and the RNG states right; a training-state checkpoint every 5 steps.
RUN = [
    "trainer.max_epochs=2",
    "model.net.channels=[16,32]",
    "data.augment=true",
    "model.net.dropout=0.1",
    "callbacks.resume_checkpoints.every_n_steps=5",
    "logger.wandb.mode=offline",
]
SECRETS = {"WANDB_API_KEY": "fake-wandb-key-0123456789abcdef", "HF_TOKEN": "hf_fakeTokenValue987654321"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run, with credentials in its environment."""
    log_dir = tmp_path_factory.mktemp("reference") / "outputs"
    assert_ok(run_script("train", *RUN, log_dir=log_dir, env=SECRETS))
    (run_dir,) = run_dirs(log_dir)
    return run_dir


def test_lineage_records_the_run(reference):
    record = yaml.safe_load((reference / "lineage.yaml").read_text())
    assert record["status"] == "finished" and record["error"] is None
    assert record["run_dir"] == str(reference)
    assert set(RUN) <= set(record["overrides"]) and "train.py" in record["command"]
    assert record["seed"] == record["config"]["seed"] == 42
    assert record["config"]["model"]["net"]["dropout"] == 0.1  # resolved config, nested
    assert record["started"] <= record["ended"]
    git = record["git"]
    assert re.fullmatch(r"[0-9a-f]{40}", git["commit"]) and isinstance(git["dirty"], bool)
    assert (reference / git["patch"]).is_file() if git["dirty"] else git["patch"] is None
    assert re.fullmatch(r"[0-9a-f]{32}\.dir", record["data"]["md5"])
    assert {"python", "torch", "lightning", "hydra-core", "torchmetrics"} <= set(record["versions"])
    hardware = record["hardware"]
    assert hardware["world_size"] == 1 and hardware["precision"] == "32-true" and hardware["cpu"]
    assert list((reference / "wandb").glob(f"offline-run-*-{record['wandb']['id']}"))
    metrics = read_metrics(reference)
    assert record["metrics"] == {name: value for name, value in metrics.items() if name not in ("fit seconds", "data")}
    checkpoints = record["checkpoints"]
    assert Path(checkpoints["best"]).is_file() and Path(checkpoints["last"]).name == "step-00000042.ckpt"
    for name in checkpoints["kept"]:  # every checkpoint carries the record and the config to rebuild from
        checkpoint = load_checkpoint(reference / "checkpoints" / name)
        assert checkpoint["run_config"] == record["config"]
        assert checkpoint["lineage"]["git"] == git and checkpoint["lineage"]["wandb"] == record["wandb"]


def test_no_secret_in_run_dir(reference):
    for path in reference.rglob("*"):
        if path.is_file() and not path.is_symlink():
            content = path.read_bytes()
            for name, value in SECRETS.items():
                assert value.encode() not in content, f"{name} leaked into {path}"


def test_redact_blanks_credentials_from_the_environment(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "s3cr3t-t0ken-value")
    monkeypatch.setenv("HOME_DIRECTORY_NAME", "not-a-secret-value")
    record = {"command": "train.py notes=s3cr3t-t0ken-value", "list": ["x s3cr3t-t0ken-value"], "n": 3}
    assert redact(record) == {
        "command": "train.py notes=<redacted:MY_SERVICE_TOKEN>",
        "list": ["x <redacted:MY_SERVICE_TOKEN>"],
        "n": 3,
    }
    assert redact("not-a-secret-value") == "not-a-secret-value"


def test_wandb_offline_run_holds_the_lineage_media_and_best_checkpoint(reference):
    (run_files,) = offline_runs(reference)
    run = read_offline_run(run_files)
    record = yaml.safe_load((reference / "lineage.yaml").read_text())
    assert run.finished and run.run_id == record["wandb"]["id"] and run.job_type == "train" and run.project == "dlforge"
    config = {key: value for key, value in run.config.items() if key != "_wandb"}
    assert config == json.loads(json.dumps(record))  # the whole record, nested, final
    assert run.summary["test/acc"] == pytest.approx(record["metrics"]["test/acc"])
    assert run.summary["test/confusion_matrix"]["_type"] == "image-file"
    assert run.summary["test/predictions"]["count"] == 16
    assert any(name.startswith("media/images/test/confusion_matrix") for name in run.files)
    (artifact,) = run.artifacts
    assert artifact.type == "model" and "best" in artifact.aliases
    (entry,) = artifact.manifest.contents
    assert entry.ref == (reference / "checkpoints" / "best.ckpt").as_uri()  # by reference: offline


def _start(run_dir: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "src" / "train.py"), f"hydra.run.dir={run_dir}", *RUN, *overrides],
        cwd=ROOT,
        env=script_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _assert_same_end(run_dir: Path, reference: Path) -> None:
    """Final weights, optimizer and loop state, and every final metric, bit for bit."""
    resumed, uninterrupted = (
        torch.load(d / "checkpoints" / "last.ckpt", weights_only=True) for d in (run_dir, reference)
    )
    for key in ("state_dict", "optimizer_states", "lr_schedulers", "global_step", "epoch"):
        assert identical(resumed[key], uninterrupted[key]), key
    without_time = lambda metrics: {k: v for k, v in metrics.items() if k != "fit seconds"}  # noqa: E731
    assert without_time(read_metrics(run_dir)) == without_time(read_metrics(reference))


def test_resume_after_sigkill_is_bit_exact(reference, tmp_path):
    run_dir = tmp_path / "run"
    process = _start(run_dir)
    when_saved(process, run_dir / "checkpoints" / "step-00000005.ckpt")
    process.kill()
    assert process.wait() == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists()

    result = run_script("train", f"resume={run_dir}", log_dir=tmp_path / "elsewhere")
    assert_ok(result)
    _assert_same_end(run_dir, reference)
    record = yaml.safe_load((run_dir / "lineage.yaml").read_text())
    (resume,) = record["resumes"]
    assert record["status"] == "finished" and resume["step"] >= 5
    assert (run_dir / "resumes").is_dir() and not (tmp_path / "elsewhere").exists()
    killed, resumed = offline_runs(run_dir)  # the same W&B run continues (id at the end of the name)
    assert killed.name.endswith(record["wandb"]["id"]) and resumed.name.endswith(record["wandb"]["id"])
    assert read_offline_run(resumed).run_id == record["wandb"]["id"] and read_offline_run(resumed).finished


def test_sigterm_saves_and_exits_0_and_resume_skips_a_corrupt_checkpoint(reference, tmp_path):
    run_dir = tmp_path / "run"
    process = _start(run_dir)
    when_saved(process, run_dir / "checkpoints" / "step-00000005.ckpt")
    process.send_signal(signal.SIGTERM)
    output = process.communicate()[0]
    assert process.returncode == 0, output[-3000:]
    newest, previous = step_checkpoints(run_dir / "checkpoints")[:2]
    assert f"SIGTERM at step {int(newest.stem[5:])}: saved {newest}" in output
    assert f"resume={run_dir}" in output
    assert (run_dir / "checkpoints" / "last.ckpt").resolve() == newest
    assert yaml.safe_load((run_dir / "lineage.yaml").read_text())["status"] == "preempted"

    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a torn write, say
    with pytest.raises(CheckpointError, match=f"checkpoint {newest} is corrupt"):
        load_checkpoint(newest)
    assert newest_good_checkpoint(run_dir)[0] == previous

    result = run_script("train", f"resume={run_dir}", log_dir=tmp_path)
    assert_ok(result)
    assert f"skipping {newest.name}" in result.stdout
    _assert_same_end(run_dir, reference)


def test_resume_refuses_a_corrupt_checkpoint_named_and_config_changes(reference, tmp_path):
    corrupt = tmp_path / "checkpoints" / "step-00000005.ckpt"
    corrupt.parent.mkdir()
    corrupt.write_bytes((reference / "checkpoints" / "best.ckpt").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="is corrupt"):
        resume_point(str(corrupt), [], str(tmp_path), multirun=False)
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        resume_point(str(tmp_path), [], str(tmp_path), multirun=False)
    with pytest.raises(ConfigError, match="would change it: trainer.max_epochs=5"):
        resume_point(
            str(reference), [f"resume={reference}", "paths.log_dir=x", "trainer.max_epochs=5"], "", multirun=False
        )
    point = resume_point(str(reference), [f"resume={reference}"], "", multirun=False)
    assert point.checkpoint_path.name == "step-00000042.ckpt" and point.run_dir == reference


def test_reproduce_matches_a_run_and_flags_a_doctored_record(reference, tmp_path):
    def reproduce(run_dir: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(ROOT / "src" / "reproduce.py"), str(run_dir)],
            cwd=ROOT,
            env=script_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )

    result = reproduce(reference)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"test/acc\s.*\s0\s.*yes", result.stdout)
    assert "NO" not in result.stdout

    doctored = tmp_path / "doctored"
    doctored.mkdir()
    for name in ("lineage.yaml", "git.patch"):
        if (reference / name).exists():
            shutil.copy(reference / name, doctored / name)
    record = yaml.safe_load((doctored / "lineage.yaml").read_text())
    record["metrics"]["test/acc"] -= 0.01
    (doctored / "lineage.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    result = reproduce(doctored)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "reproduction differs in: test/acc" in result.stderr
    assert re.search(rf"test/acc\s.*{record['metrics']['test/acc']!r}.*NO", result.stdout)


def test_sigterm_stops_a_multirun_after_saving_the_current_job(log_dir):
    command = [sys.executable, str(ROOT / "src" / "train.py"), "-m", f"paths.log_dir={log_dir}", "seed=1,2", *RUN]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=script_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    while not list((log_dir / "train" / "multiruns").glob("*/0/checkpoints/step-00000005.ckpt")):
        assert process.poll() is None, f"the sweep ended before its first checkpoint:\n{process.stdout.read()[-3000:]}"
        time.sleep(0.002)
    process.send_signal(signal.SIGTERM)
    output = process.communicate()[0]
    assert process.returncode == 0, output[-3000:]
    (sweep,) = (log_dir / "train" / "multiruns").iterdir()
    assert "the sweep stops here" in output and f"resume={sweep / '0'}" in output
    assert yaml.safe_load((sweep / "0" / "lineage.yaml").read_text())["status"] == "preempted"
    assert not (sweep / "1").exists()  # the second job never started


def test_run_dirs_never_collide(tmp_path):
    base = str(tmp_path / "runs" / "2026-01-01_00-00-00_000000")  # two runs in the same microsecond
    assert [fresh_dir(base) for _ in range(3)] == [base, f"{base}_1", f"{base}_2"]
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", f"from dlforge.run.rundir import fresh_dir; print(fresh_dir({base!r}))"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    created = {racer.communicate()[0].strip() for racer in racers}
    assert created == {f"{base}_{n}" for n in range(3, 7)}


def test_shuffled_loader_resumes_mid_epoch_with_the_same_batches():
    dataset = TensorBatches(torch.arange(100).float(), torch.arange(100))
    torch.manual_seed(0)
    uninterrupted = batch_loader(dataset, 16, shuffle=True)
    uninterrupted.sampler.set_epoch(3)
    expected = [labels for _, labels in uninterrupted]
    interrupted = batch_loader(dataset, 16, shuffle=True)
    interrupted.sampler.set_epoch(3)
    batches = iter(interrupted)
    seen = [next(batches)[1] for _ in range(3)]
    resumed = batch_loader(dataset, 16, shuffle=True)
    resumed.load_state_dict(interrupted.state_dict())
    resumed.sampler.set_epoch(3)
    seen += [labels for _, labels in resumed]
    assert len(seen) == len(expected) == 7 and all(torch.equal(a, b) for a, b in zip(seen, expected))
    resumed.sampler.set_epoch(4)  # the next epoch starts from its beginning, in a new order
    assert len(list(resumed)) == 7 and not torch.equal(next(iter(resumed))[1], expected[0])
