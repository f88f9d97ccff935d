"""A DDP job whose process dies stops whole: every other rank exits within seconds with one line naming the
dead rank (dlforge.ranks), and a job that would start more CPU processes than cores is refused first."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, script_env
from dlforge.ranks import ALLOW_OVERSUBSCRIPTION_ENV, cpu_oversubscription, usable_cores

EXIT_DEADLINE = 60  # seconds from one rank's death until every process of the job is gone (issue 14)


def job_processes(session: int) -> list[int]:
    """The live (not zombie) processes of the session the job was started in: rank 0, its ranks, workers."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if os.getsid(int(entry.name)) == session and state != "Z":
                alive.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError):  # ended while we looked
            continue
    return alive


def rank_1_pid(session: int) -> int | None:
    for pid in job_processes(session):
        try:
            if b"\0LOCAL_RANK=1\0" in b"\0" + Path(f"/proc/{pid}/environ").read_bytes():
                return pid
        except (FileNotFoundError, ProcessLookupError):
            continue
    return None


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize(
    "victim,phase",
    [(0, "start-up"), (1, "start-up"), (0, "training"), (1, "training")],
    ids=["rank 0 at start-up", "rank 1 at start-up", "rank 0 in training", "rank 1 in training"],
)
def test_a_killed_rank_stops_the_whole_job_with_one_line(victim, phase, tmp_path):
    # long enough that the kill always lands in training; the job ends at the kill
    command = [sys.executable, str(ROOT / "src" / "train.py"), f"paths.log_dir={tmp_path}", "trainer=ddp"]
    command += ["logger=none", "trainer.max_steps=200", "callbacks.resume_checkpoints.every_n_steps=1"]
    job = subprocess.Popen(
        command,
        cwd=ROOT,
        env=script_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the session id finds every process of the job, orphans included
    )
    try:
        rank_1 = wait_for(lambda: rank_1_pid(job.pid), 120, "rank 1 to start")
        if phase == "training":  # rank 0 wrote a checkpoint of a step both ranks took
            wait_for(lambda: list(tmp_path.rglob("step-*.ckpt")), 180, "the first training step")
        dead = job.pid if victim == 0 else rank_1
        os.kill(dead, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: not job_processes(job.pid), EXIT_DEADLINE, f"every rank to exit after rank {victim} died")
        print(f"rank {victim} killed in {phase}: every process gone after {time.monotonic() - killed:.1f} s")
        _, stderr = job.communicate(timeout=10)
    finally:
        for pid in job_processes(job.pid):
            os.kill(pid, signal.SIGKILL)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"DDP rank {victim} (pid {dead})" in errors[0], stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert job.returncode == (-signal.SIGKILL if victim == 0 else 2)


def test_more_cpu_processes_than_cores_is_refused_before_any_starts(tmp_path):
    devices = usable_cores() + 1
    command = [sys.executable, str(ROOT / "src" / "train.py"), f"paths.log_dir={tmp_path}", "trainer=ddp"]
    started = time.monotonic()
    job = subprocess.Popen(
        [*command, f"trainer.devices={devices}"],
        cwd=ROOT,
        env={key: value for key, value in os.environ.items() if key != ALLOW_OVERSUBSCRIPTION_ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = job.communicate(timeout=60)
        left = job_processes(job.pid)  # ranks it started, orphaned
    finally:
        for pid in job_processes(job.pid):
            os.kill(pid, signal.SIGKILL)
    print(f"refused after {time.monotonic() - started:.1f} s")
    assert job.returncode == 2, stderr[-3000:]
    assert stderr.strip() == (
        f"error: trainer.devices={devices} starts {devices} CPU processes on {usable_cores()} cores: use at most "
        f"trainer.devices={usable_cores()}, or set {ALLOW_OVERSUBSCRIPTION_ENV}=1 to start them anyway"
    )
    assert not left
    assert not list(tmp_path.rglob("checkpoints"))


def test_oversubscription_is_allowed_on_request_and_not_checked_on_gpus(monkeypatch):
    cores = usable_cores()
    assert cpu_oversubscription({"accelerator": "cpu", "devices": cores}) is None
    refusal = cpu_oversubscription({"accelerator": "cpu", "devices": str(cores + 1)})
    assert re.match(rf"trainer.devices={cores + 1} starts {cores + 1} CPU processes", refusal)
    assert cpu_oversubscription({"accelerator": "gpu", "devices": cores + 1}) is None
    monkeypatch.setenv(ALLOW_OVERSUBSCRIPTION_ENV, "1")
    assert cpu_oversubscription({"accelerator": "cpu", "devices": cores + 1}) is None
