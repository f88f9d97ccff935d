"""Run dirs: a new one that no other run can get, or, for `resume=`, the run being continued.

`conf/hydra/default.yaml` calls `dlforge.run_dir` through an OmegaConf resolver (registered by
`register_resolvers`, in the `hydra:` node only: the job config stays free of custom resolvers, so
DVC can compose it). Imports nothing heavy: it runs before the task, also for `--help`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf


def register_resolvers() -> None:
    # use_cache: Hydra resolves `hydra.run.dir` more than once (Lightning's DDP launcher reads it
    # again to start the other ranks); every read must give the dir this run created.
    OmegaConf.register_new_resolver("dlforge.run_dir", run_dir, use_cache=True, replace=True)


def run_dir(resume: str | None, new_dir: str) -> str:
    """Hydra's output dir for this invocation. A new run: `new_dir`, or `new_dir_1`, `new_dir_2`... if
    taken. A resumed run: `<run dir>/resumes/<timestamp>` (this invocation's `.hydra/` and log; the
    run's checkpoints, metrics and lineage stay in the run dir), or a new dir for a checkpoint that is
    not inside a run dir."""
    resumed = resumed_run_dir(resume) if resume is not None else None
    if resumed is None:
        return fresh_dir(new_dir)
    return fresh_dir(str(resumed / "resumes" / Path(new_dir).name))


def fresh_dir(path: str) -> str:
    """Create and return `path`, or the first of `path_1`, `path_2`, ... that does not exist yet.
    `os.mkdir` is atomic: of two processes asking for the same name in the same microsecond, one
    gets it and the other the next one."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(10_000):
        candidate = path if attempt == 0 else f"{path}_{attempt}"
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free run dir next to {path}")


def resumed_run_dir(resume: str) -> Path | None:
    """The run dir `resume=` continues: the dir itself, or the run dir of `<run dir>/checkpoints/x.ckpt`."""
    path = Path(resume)
    if path.is_dir():
        return path.resolve()
    if path.is_file() and path.parent.name == "checkpoints":
        return path.parent.parent.resolve()
    return None


def reroot(value: Any, old: str, new: str) -> Any:
    """`value` (nested dicts and lists) with every path under `old` moved under `new`."""
    if isinstance(value, str):
        if value == old or value.startswith(old.rstrip("/") + "/"):
            return new + value[len(old) :]
        return value
    if isinstance(value, dict):
        return {key: reroot(item, old, new) for key, item in value.items()}
    if isinstance(value, list):
        return [reroot(item, old, new) for item in value]
    return value
