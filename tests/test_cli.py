"""Answering `--help` and `--cfg job` composes configs only: no torch, no lightning."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT

COMMANDS = [
    ("train", ["--help"]),
    ("train", ["--cfg", "job"]),
    ("train", ["model=vit", "trainer=ddp", "--cfg", "job"]),
    ("eval", ["--help"]),
    ("eval", ["ckpt_path=x.ckpt", "--cfg", "job"]),
]


@pytest.mark.parametrize("script,args", COMMANDS, ids=[" ".join([s, *a]) for s, a in COMMANDS])
def test_config_only_commands_import_no_framework(script, args):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "src" / f"{script}.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert "hydra" in imported
    assert not imported & {"torch", "lightning", "torchmetrics", "wandb", "sklearn"}, imported & {"torch", "lightning"}
    assert result.stdout.strip()


STOPPED_AFTER_IMPORTS = [  # each stops with a one-line error once torch and Lightning are imported
    ("train", ["+model.net.bogus=1"], True),
    ("eval", ["ckpt_path=missing.ckpt"], True),
    ("train", ["+model.net.bogus=1", "logger=csv"], False),
]


@pytest.mark.parametrize(
    "script,args,wandb", STOPPED_AFTER_IMPORTS, ids=[" ".join([s, *a]) for s, a, _ in STOPPED_AFTER_IMPORTS]
)
def test_a_run_that_logs_to_wandb_imports_its_api_before_torch(script, args, wandb, tmp_path):
    """`wandb.init` imports W&B's public API, whose import takes 0.4 s before torch and Lightning and 1.7 s after
    them (dlforge.run.loggers.import_wandb_first); a run without W&B imports none of it."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "src" / f"{script}.py"), f"paths.log_dir={tmp_path}", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    imported = [line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
    torch_starts = min(index for index, name in enumerate(imported) if name.split(".")[0] == "torch")
    if wandb:
        assert imported.index("wandb.apis.public") < torch_starts
    else:
        assert not [name for name in imported if name.split(".")[0] == "wandb"]
