"""A full disk during a save: one line saying so and where, exit 2, and every earlier file intact.

The disk is Linux's /dev/full (every write fails with the kernel's own ENOSPC) put behind the temporary
file a save writes; no root or small file system needed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, run_dirs, script_env
from dlforge.checkpoint_file import load_checkpoint
from dlforge.errors import DiskFull
from dlforge.files import replacing

pytestmark = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")

# Runs a script with every checkpoint write after the first epoch's going to a full disk.
FULL_AFTER_FIRST_EPOCH = """
import os, runpy, sys, tempfile
from pathlib import Path

make_temporary = tempfile.mkstemp

def full_after_first_epoch(dir, prefix, suffix):
    handle, path = make_temporary(dir=dir, prefix=prefix, suffix=suffix)
    if prefix.endswith(".ckpt.") and (Path(dir) / "step-00000005.ckpt").exists():
        os.dup2(os.open("/dev/full", os.O_WRONLY), handle)
    return handle, path

tempfile.mkstemp = full_after_first_epoch
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_full_disk_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text("the good one")
    make_temporary = tempfile.mkstemp

    def full_disk(**arguments):
        handle, path = make_temporary(**arguments)
        os.dup2(os.open("/dev/full", os.O_WRONLY), handle)
        return handle, path

    monkeypatch.setattr(tempfile, "mkstemp", full_disk)
    expected = f"^no space left on device writing {re.escape(str(target))}; what was there is unchanged$"
    with pytest.raises(DiskFull, match=expected), replacing(target, "w") as file:
        file.write("x" * 100_000)
    assert target.read_text() == "the good one"
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_a_full_disk_during_a_checkpoint_save_stops_the_run_with_one_line(tmp_path):
    log_dir = tmp_path / "outputs"
    command = [sys.executable, "-c", FULL_AFTER_FIRST_EPOCH, str(ROOT / "src" / "train.py"), f"paths.log_dir={log_dir}"]
    result = subprocess.run(
        [*command, "debug=limit_batches", "logger=none"],
        cwd=ROOT,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    (run_dir,) = run_dirs(log_dir)
    checkpoints = run_dir / "checkpoints"
    assert result.returncode == 2, result.stderr[-3000:]
    error = re.escape(f"error: no space left on device writing {checkpoints}/")
    assert re.fullmatch(rf"{error}(best|step-00000010)\.ckpt; what was there is unchanged", result.stderr.strip())
    # the first epoch's checkpoints, as they were written; nothing half-written beside them
    assert sorted(os.listdir(checkpoints)) == ["best.ckpt", "last.ckpt", "step-00000005.ckpt"]
    assert load_checkpoint(checkpoints / "step-00000005.ckpt")["global_step"] == 5
    assert load_checkpoint(checkpoints / "last.ckpt")["global_step"] == 5
    assert load_checkpoint(checkpoints / "best.ckpt")["global_step"] == 5
