"""Trust: a file handed to dlforge (checkpoint, lineage.yaml) cannot make it run code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import torch
import yaml

from conftest import ROOT, run_script
from dlforge.config.trust import literal
from dlforge.errors import CheckpointError
from dlforge.run.load import load_run
from dlforge.run.resume import resume_point


class Payload:
    """Unpickling it creates the dir `marker`: the proof that a pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def payloads(tmp: Path) -> dict[str, tuple[dict, callable]]:
    """name -> (a `_target_` node doing harm under `tmp`, a check that the harm was not done)."""
    victim = tmp / "victim.txt"
    victim.write_text("the user's file")
    pickled = tmp / "payload.pt"
    torch.save({"x": Payload(tmp / "ran-torch-pickle")}, pickled)
    array = tmp / "payload.npy"
    numpy.save(array, numpy.array([Payload(tmp / "ran-numpy-pickle")], dtype=object), allow_pickle=True)
    return {
        "torch.load": (
            {"_target_": "torch.load", "f": str(pickled), "weights_only": False},
            lambda: not (tmp / "ran-torch-pickle").exists(),
        ),
        "numpy.load": (
            {"_target_": "numpy.load", "file": str(array), "allow_pickle": True},
            lambda: not (tmp / "ran-numpy-pickle").exists(),
        ),
        "numpy.savetxt": (
            {"_target_": "numpy.savetxt", "fname": str(tmp / "site.pth"), "X": [[1.0]]},
            lambda: not (tmp / "site.pth").exists(),
        ),
        "builtins.open": (
            {"_target_": "builtins.open", "file": str(victim), "mode": "w"},
            lambda: victim.read_text() == "the user's file",
        ),
        "os.system": (
            {"_target_": "os.system", "command": f"touch {tmp / 'ran-shell'}"},
            lambda: not (tmp / "ran-shell").exists(),
        ),
    }


def doctored_checkpoint(tmp: Path, where: str, node: dict) -> Path:
    """A checkpoint that loads with `weights_only=True`, its run config's `where` node replaced by `node`."""
    config = {
        "seed": 1,
        "paths": {"output_dir": str(tmp / "old-run")},
        "data": {"_target_": "dlforge.data.image.ImageClassificationData"},
        "model": {"_target_": "dlforge.objectives.classification.Classifier"},
    }
    section, _, key = where.partition(".")
    if key:
        config[section][key] = node
    else:
        config[section] = node
    path = tmp / "checkpoints" / "doctored.ckpt"
    path.parent.mkdir(exist_ok=True)
    torch.save({"state_dict": {}, "run_config": config, "global_step": 1}, path)
    torch.load(path, weights_only=True)  # a tensor-only file: the pickle-level check lets it through
    return path


@pytest.mark.parametrize("payload", ["torch.load", "numpy.load", "numpy.savetxt", "builtins.open", "os.system"])
@pytest.mark.parametrize("where", ["data", "model.net"])
def test_a_checkpoint_naming_an_untrusted_target_is_refused_before_anything_is_built(tmp_path, payload, where):
    node, harmless = payloads(tmp_path)[payload]
    path = doctored_checkpoint(tmp_path, where, node)
    with pytest.raises(CheckpointError, match=rf"{where}\._target_='{payload}' is not a target this project ships"):
        load_run(path)
    with pytest.raises(CheckpointError, match=rf"{where}\._target_='{payload}'"):
        resume_point(str(path), [], str(tmp_path / "new-run"), multirun=False)
    assert harmless()


def test_a_recorded_interpolation_stays_text():
    assert literal({"a": ["${oc.env:HOME}", r"x\${y}", r"\\${z}"]}) == {
        "a": [r"\${oc.env:HOME}", r"x\\\${y}", r"\\\\\${z}"]
    }
    from omegaconf import OmegaConf

    config = OmegaConf.create(literal({"a": "${oc.create:{b: 1}}", "c": r"x\${y}"}))
    assert config.a == "${oc.create:{b: 1}}" and config.c == r"x\${y}"


@pytest.mark.parametrize(
    ("script", "payload", "arguments"),
    [
        ("eval", "numpy.savetxt", ["ckpt_path={ckpt}", "logger=none"]),
        ("generate", "torch.load", ["ckpt_path={ckpt}"]),
        ("train", "numpy.load", ["resume={ckpt}"]),  # resume takes no other overrides
        ("train", "builtins.open", ["ckpt_path={ckpt}"]),
    ],
)
def test_scripts_refuse_a_doctored_checkpoint_with_one_line(tmp_path, script, payload, arguments):
    node, harmless = payloads(tmp_path)[payload]
    checkpoint = doctored_checkpoint(tmp_path, "data", node)
    overrides = [argument.format(ckpt=checkpoint) for argument in arguments]
    result = run_script(script, *overrides, log_dir=tmp_path / "logs", timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {checkpoint}: data._target_='{payload}' is not a target this project ships; refusing to build it "
        f"from a file (trusted: conf/'s targets, dlforge classes, or data._target_={payload} on the command line)"
    )
    assert harmless()


def test_reproduce_refuses_a_doctored_lineage(tmp_path):
    node, harmless = payloads(tmp_path)["numpy.savetxt"]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = {"seed": 1, "paths": {"output_dir": str(run_dir)}, "callbacks": {"evil": node}}
    record = {"status": "finished", "metrics": {"test/acc": 1.0}, "git": None, "config": config}
    (run_dir / "lineage.yaml").write_text(yaml.safe_dump(record))
    result = subprocess.run(
        [sys.executable, str(ROOT / "src" / "reproduce.py"), str(run_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"error: {run_dir / 'lineage.yaml'}: callbacks.evil._target_='numpy.savetxt' is not")
    assert harmless()
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        ["run", "victim.txt", "payload.pt", "payload.npy"]
    )  # no new run dir beside it


def test_url_passwords_are_masked_as_best_yaml_shows_them():
    from sqlalchemy.engine import make_url

    from dlforge.config.secrets import mask_urls

    url = "postgresql+psycopg://user:p%40ss:word@db.example:5432/studies"
    shown_by_sqlalchemy = make_url(url).render_as_string(hide_password=True)
    assert mask_urls(url) == shown_by_sqlalchemy == "postgresql+psycopg://user:***@db.example:5432/studies"
    assert mask_urls({"a": [f"hydra.sweeper.storage={url} x"], "b": "sqlite:///x.db"}) == {
        "a": ["hydra.sweeper.storage=postgresql+psycopg://user:***@db.example:5432/studies x"],
        "b": "sqlite:///x.db",
    }


def test_a_sweep_records_no_url_password(tmp_path):
    """The URL reaches the job (its environment) but no file: multirun.yaml, .hydra/, lineage.yaml, checkpoints."""
    secret_url = "postgresql://user:secret@host/db"
    arguments = ["-m", f"paths.log_dir={tmp_path}", f"+hydra.job.env_set.DLFORGE_TEST_DB={secret_url}"]
    arguments += ["debug=limit_batches", "trainer.max_epochs=1", "logger=none"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "src" / "train.py"), *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "train" / "multiruns").iterdir()
    # git.patch: this checkout's uncommitted diff, which may hold this very test
    recorded = [path for path in sweep_dir.rglob("*") if path.is_file() and path.suffix != ".patch"]
    assert {"multirun.yaml", "hydra.yaml", "lineage.yaml", "best.ckpt"} <= {path.name for path in recorded}
    assert [path for path in recorded if b"user:secret@" in path.read_bytes()] == []
    for name in ("multirun.yaml", "0/.hydra/hydra.yaml", "0/lineage.yaml", "0/checkpoints/best.ckpt"):
        assert b"postgresql://user:***@host/db" in (sweep_dir / name).read_bytes(), name


def test_hydra_files_are_masked_and_the_job_config_is_not(tmp_path):
    from conftest import compose
    from dlforge.run.rundir import RunDirCallback

    config = compose("train", ["+hydra.job.env_set.DB=postgresql://user:secret@host/db"], tmp_path)
    hydra_dir = tmp_path / ".hydra"
    hydra_dir.mkdir()
    (hydra_dir / "hydra.yaml").write_text("env_set:\n  DB: postgresql://user:secret@host/db\n")
    RunDirCallback().on_job_start(config)
    assert (hydra_dir / "hydra.yaml").read_text() == "env_set:\n  DB: postgresql://user:***@host/db\n"
    assert config.hydra.job.env_set.DB == "postgresql://user:secret@host/db"


def test_a_run_dir_of_another_run_is_refused_before_anything_is_written(tmp_path):
    run_dir = tmp_path / "taken"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "lineage.yaml").write_text("status: finished\n")
    (run_dir / "metrics.json").write_text('{"test/acc": 0.9}')
    before = sorted(path.relative_to(run_dir) for path in run_dir.rglob("*"))
    result = run_script("train", f"hydra.run.dir={run_dir}", "logger=none", log_dir=tmp_path / "logs", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: hydra.run.dir={run_dir} holds another run (lineage.yaml, metrics.json, checkpoints); "
        f"continue it with python src/train.py resume={run_dir}, or give a dir of its own"
    ]
    assert sorted(path.relative_to(run_dir) for path in run_dir.rglob("*")) == before
    assert (run_dir / "metrics.json").read_text() == '{"test/acc": 0.9}'


def test_a_new_or_empty_run_dir_and_ddp_ranks_pass_the_run_dir_check(tmp_path):
    from conftest import compose
    from dlforge.run.rundir import check_run_dir

    taken = tmp_path / "taken"
    (taken / ".hydra").mkdir(parents=True)
    check_run_dir(compose("train", [f"hydra.run.dir={tmp_path / 'empty'}"], tmp_path))
    check_run_dir(compose("train", [f"hydra.run.dir={taken}", "hydra.output_subdir=null"], tmp_path))  # a rank > 0
    check_run_dir(compose("train", [], tmp_path))  # the default: a fresh dir
    with pytest.raises(Exception, match="holds another run"):
        check_run_dir(compose("train", [f"hydra.run.dir={taken}"], tmp_path))


def test_trusted_targets(monkeypatch):
    from dlforge.config.trust import trusted_target

    assert trusted_target("torch.optim.AdamW")  # named in conf/optimizer
    assert trusted_target("dlforge.nets.vision.cnn.CNN")
    assert not trusted_target("dlforge.run.rundir.fresh_dir")  # a dlforge function that makes dirs
    assert not trusted_target("dlforge.run.rundir.Path")  # a class a dlforge module imported
    assert not trusted_target("torch.load")
    monkeypatch.setattr(sys, "argv", ["train.py", "+model.net._target_=mypackage.Net"])
    assert trusted_target("mypackage.Net") and not trusted_target("mypackage.Other")


def test_lineage_checkpoints_and_wandb_config_record_no_url_password(tmp_path):
    from types import SimpleNamespace

    from dlforge.run.lineage import Lineage

    url = "postgresql://user:secret@host/db"
    lineage = Lineage.start(tmp_path, {"seed": 1, "storage": url}, [f"+db={url}"])
    wandb_run = SimpleNamespace(config=SimpleNamespace(update=lambda record, **_: recorded.update(record)))
    recorded = {}
    lineage.write(wandb_run)
    embedded = lineage.embedded()
    assert "user:secret@" not in (tmp_path / "lineage.yaml").read_text() + repr(embedded) + repr(recorded)
    assert embedded["run_config"]["storage"] == recorded["config"]["storage"] == "postgresql://user:***@host/db"
    assert embedded["lineage"]["overrides"] == ["+db=postgresql://user:***@host/db"]
    assert lineage.record["config"]["storage"] == url  # the run itself keeps the real one
