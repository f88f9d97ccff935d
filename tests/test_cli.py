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
