"""DVC: data.dvc and the default remote, data verification at train time, and the dvc.yaml pipeline
driven by `dvc exp run -S`, in a throw-away git + DVC copy of the project (the remote is a local dir)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, assert_ok, read_metrics, run_dirs

TINY = ("debug=limit_batches", "logger=none")
ENV = {
    **{name: value for name, value in os.environ.items() if not name.startswith("DLFORGE_")},
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # dvc.yaml runs `python`
    "DVC_NO_ANALYTICS": "1",
    "WANDB_MODE": "offline",
    **{
        f"GIT_{who}_{what}": value
        for who in ("AUTHOR", "COMMITTER")
        for what, value in (("NAME", "t"), ("EMAIL", "t@t"))
    },
}


def run(repo: Path, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=repo, env=ENV, capture_output=True, text=True, timeout=600)


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    result = run(repo, sys.executable, "-m", "dvc", *args)
    assert_ok(result)
    return result


def script(repo: Path, name: str, *overrides: str) -> subprocess.CompletedProcess:
    return run(repo, sys.executable, f"src/{name}.py", *overrides)


def commit(repo: Path, message: str) -> None:
    for command in (("git", "add", "-A"), ("git", "commit", "-qm", message)):
        assert_ok(run(repo, *command))


def copy_project(destination: Path) -> None:
    """The working tree without what runs, git and DVC made (as a fresh clone has it)."""

    def made(directory: str, names: list[str]) -> list[str]:
        made_here = {
            ROOT: {".git", ".venv", "outputs", "data", "results", "dvc_plots"},
            ROOT / ".dvc": {"cache", "tmp", "config.local"},
        }
        return [
            name
            for name in names
            if name in made_here.get(Path(directory), set())
            or name in {"__pycache__", ".pytest_cache", "wandb"}
            or name.endswith(".egg-info")
        ]

    shutil.copytree(ROOT, destination, ignore=made)


def test_params_yaml_is_what_dvc_composes_from_conf(tmp_path, monkeypatch):
    """`dvc repro` trains params.yaml as committed; `dvc exp run` composes it anew from conf/ first."""
    from dvc.utils.hydra import compose_and_dump

    for name in ("DLFORGE_ROOT", "DLFORGE_RUN_DIR"):
        monkeypatch.delenv(name, raising=False)
    compose_and_dump(tmp_path / "params.yaml", str(ROOT / "conf"), None, "train", str(ROOT), [])
    assert (ROOT / "params.yaml").read_text() == (tmp_path / "params.yaml").read_text(), (
        "params.yaml is older than conf/: `dvc exp run` composes it anew, or without training, with DLFORGE_ROOT "
        "unset: dvc.utils.hydra.compose_and_dump('params.yaml', '<repo>/conf', None, 'train', '<repo>', [])"
    )


@pytest.fixture(scope="module")
def pulled(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """prepare -> dvc add -> push to a local remote -> delete data and cache -> pull -> train."""
    repo = tmp_path_factory.mktemp("dvc") / "project"
    copy_project(repo)
    assert_ok(run(repo, "git", "init", "-q"))
    dvc(repo, "remote", "modify", "--local", "local", "url", str(repo.parent / "remote"))
    commit(repo, "project")
    assert_ok(script(repo, "prepare", "data=digits"))
    dvc(repo, "add", "data")
    commit(repo, "digits")
    dvc(repo, "push")
    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    dvc(repo, "pull")
    return repo, script(repo, "train", *TINY)


def test_pulled_data_is_verified_and_trains(pulled):
    repo, result = pulled
    assert_ok(result)
    recorded = yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]["md5"]
    assert f"data: 2 files read from data are as data.dvc records ({recorded})" in result.stdout
    (run_dir,) = run_dirs(repo / "outputs")
    data = yaml.safe_load((run_dir / "lineage.yaml").read_text())["data"]
    assert data["verified"] and data["recorded"] == recorded and data["files"] == 2
    assert data["md5"] == recorded  # digits alone make the data dir here, so the files read are all of it
    assert sorted(path.name for path in (run_dir / "curves" / "val").iterdir()) == ["acc.csv", "f1.csv", "loss.csv"]


def test_tampered_data_stops_the_run_before_training(pulled):
    repo, _ = pulled
    previous = {
        path: path.stat().st_mtime_ns
        for run_dir in run_dirs(repo / "outputs")
        for path in [run_dir, *run_dir.rglob("*")]
    }
    images = repo / "data" / "digits" / "images.npy"
    original = images.read_bytes()
    images.write_bytes(original[:-1] + bytes([(original[-1] + 1) % 17]))  # one pixel, still a valid array
    try:
        stopped = script(repo, "train", *TINY)
        unverified = script(repo, "train", *TINY, "verify_data=false")
    finally:
        images.write_bytes(original)
    assert stopped.returncode == 2
    assert stopped.stderr.strip().splitlines()[-1] == (
        "error: the data this run reads is not the version in data.dvc: changed: data/digits/images.npy; "
        "`dvc pull` gets the recorded version, `dvc add data` records this one, "
        "verify_data=false trains on it unverified"
    )
    *_, stopped_dir, unverified_dir = run_dirs(repo / "outputs")
    assert not (stopped_dir / "checkpoints").exists() and not (stopped_dir / "metrics.json").exists()
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in previous.items())  # earlier runs untouched
    assert_ok(unverified)
    data = yaml.safe_load((unverified_dir / "lineage.yaml").read_text())["data"]
    assert data["verified"] is False and data["recorded"] is None and data["files"] == 2


def exp_run(repo: Path, *overrides: str) -> subprocess.CompletedProcess:
    return dvc(repo, "exp", "run", *(arg for override in overrides for arg in ("-S", override)))


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """The README's `dvc exp run -S ...` in a fresh clone, with nothing run before: no data/, no DVC cache."""
    repo = tmp_path_factory.mktemp("fresh") / "project"
    copy_project(repo)
    assert_ok(run(repo, "git", "init", "-q"))
    commit(repo, "project")
    exp_run(repo, "model=vit", "optimizer.lr=3e-4", *TINY)
    return repo


def test_exp_run_in_a_fresh_clone_makes_the_recorded_data_and_leaves_data_dvc(experiment):
    """A clone that has not pulled prepares the offline datasets instead (the prepare stage, as train.py does when
    DVC's cache lacks data.dvc's file list), which works while data.dvc records exactly what they make."""
    from dlforge.data.versioning import all_files, dir_md5, hash_files, recorded_md5

    assert run(experiment, "git", "diff", "--quiet", "HEAD", "--", "data.dvc").returncode == 0
    made = hash_files(experiment / "data", all_files(experiment / "data"))
    assert dir_md5(made) == recorded_md5(experiment), (
        f"data.dvc is not what the offline datasets make now ({sorted(made)}): prepare them into an empty data dir "
        "(`python src/prepare.py all=true`), then `dvc add data`"
    )
    assert json.loads((experiment / "results" / "prepare" / "data.json").read_text()) == {
        "files": len(made),
        "md5": recorded_md5(experiment),
    }
    data = yaml.safe_load((experiment / "results" / "train" / "lineage.yaml").read_text())["data"]
    assert data["verified"] and data["recorded"] == recorded_md5(experiment)


def test_exp_run_trains_the_overridden_config(experiment):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    run_dir = experiment / "results" / "train"
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    assert sorted(overrides) == ["debug=limit_batches", "logger=none", "model=vit", "optimizer.lr=0.0003"]
    with initialize_config_dir(config_dir=str(experiment / "conf"), version_base="1.3"):
        expected = OmegaConf.to_yaml(compose("train", overrides=overrides))
    assert (run_dir / ".hydra" / "config.yaml").read_text() == expected  # what `python src/train.py ...` saves
    run_config = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["run_config"]
    assert run_config["model"]["net"]["_target_"] == "dlforge.nets.vision.vit.ViT"
    assert run_config["optimizer"]["lr"] == 3e-4 and run_config["trainer"]["max_epochs"] == 2
    # params.yaml has `monitor: null` resolved into the checkpoint callback; the run has the objective's own
    assert run_config["callbacks"]["model_checkpoint"]["monitor"] == "val/acc"
    assert read_metrics(experiment / "results" / "evaluate")["test/acc"] == read_metrics(run_dir)["test/acc"]


def test_repro_with_nothing_changed_trains_nothing(experiment):
    metrics = experiment / "results" / "train" / "metrics.json"
    written = metrics.stat().st_mtime_ns
    result = dvc(experiment, "repro")
    assert "Running stage 'prepare'" in result.stdout  # always: data/ changes outside the pipeline
    assert "Stage 'train' didn't change, skipping" in result.stdout
    assert "Stage 'evaluate' didn't change, skipping" in result.stdout
    assert "Running stage 'train'" not in result.stdout and metrics.stat().st_mtime_ns == written


def test_exp_show_lists_the_experiment_with_its_metrics(experiment):
    baselines = json.loads(dvc(experiment, "exp", "show", "--json").stdout)
    runs = [
        run["data"]
        for baseline in baselines
        for experiment_ in baseline["experiments"] or []
        for run in experiment_["revs"]
    ]
    (shown,) = [
        data for data in runs if data["params"]["params.yaml"]["data"]["model"]["net"]["_target_"].endswith("ViT")
    ]
    assert shown["params"]["params.yaml"]["data"]["optimizer"]["lr"] == 3e-4
    metrics = shown["metrics"]["results/train/metrics.json"]["data"]
    assert metrics["test/acc"] == read_metrics(experiment / "results" / "train")["test/acc"]
    plots = dvc(experiment, "plots", "show", "--json").stdout
    assert "results/train/curves/val/acc.csv" in plots


def test_another_exp_run_in_the_same_workspace_trains_anew(experiment):
    """The stage run dirs hold the previous run's record, which DVC clears as the stage's outputs."""
    exp_run(experiment, "seed=1", *TINY)
    config = yaml.safe_load((experiment / "results" / "train" / ".hydra" / "config.yaml").read_text())
    assert config["seed"] == 1 and config["model"]["net"]["_target_"].endswith(".CNN")
    assert (
        read_metrics(experiment / "results" / "evaluate")["test/acc"]
        == read_metrics(experiment / "results" / "train")["test/acc"]
    )
