"""W&B without a network: with credentials and a W&B server that cannot be reached, a run logs offline
after one warning line instead of waiting for `wandb.init` (twice, 207 s) and crashing unrecorded;
`mode=online` stops at once with one line; a server that answers but cannot start the run stops it
after one try, with the run recorded. There is no real network here: local servers stand in for W&B."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time

import lightning.pytorch.loggers  # noqa: F401 - imported here, so that the timings below are of the probe
import pytest
import yaml

from conftest import ROOT, assert_ok, read_metrics, run_dirs, run_script, script_env
from dlforge.errors import UserError
from dlforge.run.loggers import wandb_logger, wandb_unreachable
from servers import file_server, head_only_server, refusing_url, stalling_server
from wandb_offline import offline_runs

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters, as W&B's keys
TINY_RUN = ["trainer.max_steps=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]


def test_the_probe_tells_an_answering_server_from_a_silent_or_refusing_one(tmp_path, monkeypatch):
    with file_server(tmp_path) as url:  # any HTTP answer counts, here a 404
        monkeypatch.setenv("WANDB_BASE_URL", url)
        assert wandb_unreachable(timeout=1) is None
    with stalling_server() as url:
        monkeypatch.setenv("WANDB_BASE_URL", url)
        started = time.monotonic()
        reason = wandb_unreachable(timeout=1)
        assert reason == f"{url} did not answer within 1 s (logger.wandb.probe_timeout)"
        assert time.monotonic() - started < 2
    url = refusing_url()
    monkeypatch.setenv("WANDB_BASE_URL", url)
    assert wandb_unreachable(timeout=1) == f"{url}: [Errno 111] Connection refused"


def test_mode_online_without_an_answering_server_stops_at_once_with_one_line(tmp_path, monkeypatch):
    url = refusing_url()
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", url)
    started = time.monotonic()
    with pytest.raises(UserError) as raised:
        wandb_logger("dlforge", str(tmp_path), mode="online", probe_timeout=1)
    assert time.monotonic() - started < 1
    assert str(raised.value) == (
        f"logger.wandb.mode=online, but W&B cannot be reached: {url}: [Errno 111] Connection refused; "
        "logger.wandb.mode=auto logs offline when it cannot"
    )
    assert not (tmp_path / "wandb").exists()


def test_credentials_and_a_silent_server_log_offline_after_one_warning(log_dir):
    """The issue's case: a key, and a W&B host that accepts connections and never answers."""
    with stalling_server() as url:
        started = time.monotonic()
        # the probe's wait is the knob's (5 s by default): 1 s here, as the warning then says
        result = run_script(
            "train",
            *TINY_RUN,
            "logger.wandb.probe_timeout=1",
            log_dir=log_dir,
            env={"WANDB_API_KEY": FAKE_KEY, "WANDB_BASE_URL": url},
            timeout=150,
        )
        seconds = time.monotonic() - started
    assert_ok(result)
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if "W&B cannot be reached" in line]
    (run_dir,) = run_dirs(log_dir)
    assert warnings == [
        f"W&B cannot be reached: {url} did not answer within 1 s (logger.wandb.probe_timeout); "
        f"this run logs offline to {run_dir / 'wandb'} (`wandb sync` uploads it later)"
    ]
    record = yaml.safe_load((run_dir / "lineage.yaml").read_text())
    assert record["status"] == "finished" and record["wandb"]["mode"] == "offline"
    assert len(offline_runs(run_dir)) == 1 and "test/acc" in read_metrics(run_dir)
    assert seconds < 100  # the probe's 1 s on top of a tiny run; 236 s and a crash before


def test_a_server_that_cannot_start_the_run_stops_it_after_one_try_with_the_run_recorded(log_dir):
    """The probe is answered, but `wandb.init` times out: one try, one line, exit 2, lineage.yaml written."""
    # WANDB_MODE: script_env blanks it, which W&B refuses in an online run
    env = {"WANDB_API_KEY": FAKE_KEY, "WANDB_INIT_TIMEOUT": "2", "WANDB_MODE": "online"}
    command = [sys.executable, str(ROOT / "src" / "train.py"), f"paths.log_dir={log_dir}", *TINY_RUN]
    with contextlib.ExitStack() as server:
        url = server.enter_context(head_only_server())
        started = time.monotonic()
        script = subprocess.Popen(
            command,
            cwd=ROOT,
            env=script_env(**env, WANDB_BASE_URL=url),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        watchdog = threading.Timer(150, script.kill)
        watchdog.start()
        stderr = []
        for line in script.stderr:
            stderr.append(line)
            if line.startswith("error: W&B failed: "):
                # The run has failed and said so; answering the held requests now spares W&B's exit ~20 s
                # of waiting on them (its own teardown, not the run's one try).
                server.close()
        script.wait()
        watchdog.cancel()
        seconds = time.monotonic() - started
    stderr = "".join(stderr)
    assert script.returncode == 2, stderr[-3000:]
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: W&B failed: ")
    assert last_line.endswith("; logger.wandb.mode=offline logs without W&B's server")
    (run_dir,) = run_dirs(log_dir)
    record = yaml.safe_load((run_dir / "lineage.yaml").read_text())
    assert record["status"] == "interrupted" and record["error"] == f"UserError: {last_line.removeprefix('error: ')}"
    assert len(list((run_dir / "wandb").glob("run-*"))) == 1  # one try: wandb.init was not called again
    assert seconds < 60
