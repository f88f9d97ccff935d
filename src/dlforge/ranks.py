"""DDP ranks that end together: when one process of a job dies, the others stop within seconds, with one
line naming the rank that died, instead of waiting in gloo for the dead one (30 minutes by default).

Lightning's `trainer=ddp` on one machine re-runs the script for ranks > 0 from rank 0 (its subprocess
launcher). Both directions are watched from threads, since a rank's main thread may be blocked in a
collective or in the rendezvous, where neither Python nor a signal handler runs:
- rank 0 polls the ranks it launched (`RankSupervisor`, in place of Lightning's own observer, which
  killed rank 0 with SIGKILL and no word of which rank had died);
- each launched rank polls its parent (`watch_launcher`): if rank 0 dies, it exits too.
When rank 0 ends on an error of its own it stops its ranks first, and when it succeeds it waits for
them, so that no rank outlives its job. Ranks started by torchrun or SLURM are the launcher's business.

Nothing heavy is imported here: `cli` checks the config and starts the launcher watch before torch loads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

POLL_SECONDS = 0.5
GRACE_SECONDS = 5  # for rank 0's main thread to end by itself (records the run as interrupted) after a death
EXIT_TIMEOUT_SECONDS = 60  # for launched ranks to exit after rank 0's job finished
ALLOW_OVERSUBSCRIPTION_ENV = "DLFORGE_ALLOW_CPU_OVERSUBSCRIPTION"


class RankDied(Exception):
    """Another process of this DDP job died; the job was stopped."""


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, as set by taskset, cgroups or SLURM)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_oversubscription(trainer: dict) -> str | None:
    """Why the trainer config would start more DDP processes on CPU than there are cores, or None.

    A rank of even a small model holds ~1 GB here (torch, Lightning, the data): `trainer.devices=64` on 2
    cores ran out of memory, and the ranks only share the same cores. Checked on the config alone, before
    anything starts; torch is imported only when `accelerator: auto` must learn whether a GPU is there.
    """
    devices = trainer.get("devices")
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    cores = usable_cores()
    if not isinstance(devices, int) or devices <= cores or os.environ.get(ALLOW_OVERSUBSCRIPTION_ENV) == "1":
        return None
    accelerator = trainer.get("accelerator") or "auto"
    if accelerator == "auto":
        import torch

        accelerator = "cpu" if not (torch.cuda.is_available() or torch.backends.mps.is_available()) else "gpu"
    if accelerator != "cpu":
        return None
    return (
        f"trainer.devices={devices} starts {devices} CPU processes on {cores} cores: use at most "
        f"trainer.devices={cores}, or set {ALLOW_OVERSUBSCRIPTION_ENV}=1 to start them anyway"
    )


_launcher: tuple[int, int] | None = None  # in a rank rank 0 launched: (rank 0's pid, this rank)
_exiting = threading.Lock()


def watch_launcher(launcher_pid: int, rank: int) -> None:
    """In a rank that rank 0 launched: exit as soon as rank 0 (`launcher_pid`, the parent) is gone."""
    global _launcher
    _launcher = (launcher_pid, rank)

    def watch() -> None:
        while os.getppid() == launcher_pid:
            time.sleep(POLL_SECONDS)
        _exit_for_dead_launcher()

    threading.Thread(target=watch, name="dlforge-launcher-watch", daemon=True).start()


def exit_if_launcher_died() -> None:
    """In a launched rank whose job failed: when the failure was rank 0 dying (its sockets close a moment
    before the rank sees its parent gone), exit as the watch does, instead of with a gloo traceback."""
    if _launcher is None:
        return
    deadline = time.monotonic() + POLL_SECONDS * 2
    while os.getppid() == _launcher[0] and time.monotonic() < deadline:
        time.sleep(0.05)
    if os.getppid() != _launcher[0]:
        _exit_for_dead_launcher()


def _exit_for_dead_launcher() -> None:
    """Rank 1 says so in one line; the others exit quietly, so that the line is printed once."""
    _exiting.acquire()  # the watch and the main thread may both get here: the second waits for the exit
    launcher_pid, rank = _launcher
    if rank == 1:
        print(f"error: DDP rank 0 (pid {launcher_pid}) died; its other ranks stopped", file=sys.stderr, flush=True)
    os._exit(2)


class RankSupervisor:
    """Rank 0's view of the ranks it launched for the current job."""

    def __init__(self):
        self._lock = threading.Lock()
        self._procs: list[subprocess.Popen] = []
        self._stopping = False  # rank 0 itself is stopping its ranks: their deaths are no news
        self._death: str | None = None
        self._reported = False

    def observe(self, procs: list[subprocess.Popen]) -> None:
        """Watch the ranks Lightning just launched for a new job (what its `_launch_process_observer` gets)."""
        with self._lock:
            self._procs, self._stopping, self._death, self._reported = procs, False, None, False
        threading.Thread(target=self._watch, args=(procs,), name="dlforge-rank-watch", daemon=True).start()

    def _watch(self, procs: list[subprocess.Popen]) -> None:
        while procs is self._procs and not self._stopping:
            death = self.death()
            if death is not None:
                deadline = time.monotonic() + GRACE_SECONDS
                while time.monotonic() < deadline and not self._reported:
                    time.sleep(POLL_SECONDS)
                if self._claim_report():  # the main thread is stuck (rendezvous, collective): end it here
                    print(f"error: {death}", file=sys.stderr, flush=True)
                    os._exit(2)
                return
            if all(proc.returncode == 0 for proc in procs):
                return
            time.sleep(POLL_SECONDS)

    def death(self) -> str | None:
        """The first launched rank that died (rank 0 did not stop it), the others then stopped; or None."""
        with self._lock:
            if self._death is None and not self._stopping:
                dead = [(rank, proc) for rank, proc in enumerate(self._procs, start=1) if proc.poll() not in (None, 0)]
                if dead:
                    self._kill_all()
                    rank, proc = dead[0]
                    how = _how_it_ended(proc.returncode)
                    self._death = f"DDP rank {rank} (pid {proc.pid}) {how}; the job's other ranks stopped"
            return self._death

    def stop(self) -> None:
        """Rank 0 stops its ranks itself (its own error, or Lightning's KeyboardInterrupt handling)."""
        with self._lock:
            self._stopping = True
            self._kill_all()

    def end_job(self, failed: bool) -> str | None:
        """At the end of rank 0's job: the death of a launched rank to report instead of the job's own
        error (claimed: printed by the caller, not by the watch), or None. A failed job's ranks are
        stopped; a finished job's are waited for (and stopped after EXIT_TIMEOUT_SECONDS)."""
        if not self._procs:
            return None
        # A rank killed during a collective closes its sockets a moment before it becomes waitable.
        deadline = time.monotonic() + (POLL_SECONDS * 2 if failed else EXIT_TIMEOUT_SECONDS)
        while self.death() is None and time.monotonic() < deadline:
            if not failed and all(proc.returncode is not None for proc in self._procs):
                break
            time.sleep(0.05)
        death = self.death()
        if death is not None and not self._claim_report():
            threading.Event().wait()  # the watch has reported it and is ending this process
        self.stop()
        for proc in self._procs:
            proc.wait()
        self._procs = []  # ends the watch; the next job (multirun) launches ranks of its own
        return death

    def _claim_report(self) -> bool:
        with self._lock:
            claimed, self._reported = not self._reported, True
            return claimed

    def _kill_all(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()  # SIGTERM would be taken for preemption (ResumeCheckpoints) and save first


def _how_it_ended(returncode: int) -> str:
    if returncode < 0:
        return f"died (killed by {signal.Signals(-returncode).name})"
    return f"exited with code {returncode}"


supervisor = RankSupervisor()


def supervise_launched_ranks() -> None:
    """Make Lightning's subprocess launcher report to `supervisor` (rank 0, once Lightning is imported)."""
    # lightning 2.6: the launcher calls the module-level `_launch_process_observer(self.procs)` right after
    # starting the ranks, and `kill(signum)` when it stops them itself (KeyboardInterrupt)
    from lightning.pytorch.strategies.launchers import subprocess_script

    if subprocess_script._launch_process_observer == supervisor.observe:
        return
    launcher = subprocess_script._SubprocessScriptLauncher
    lightning_kill = launcher.kill

    def kill(self, signum) -> None:
        supervisor.stop()
        lightning_kill(self, signum)

    launcher.kill = kill
    subprocess_script._launch_process_observer = supervisor.observe
