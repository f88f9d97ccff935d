"""Run dirs: a new one that no other run can get, or, for `resume=`, the run being continued.

`conf/hydra/default.yaml` calls `dlforge.run_dir` through an OmegaConf resolver (registered by
`register_resolvers`, in the `hydra:` node only: the job config stays free of custom resolvers, so
DVC can compose it), and registers `RunDirCallback`: a run dir given as `hydra.run.dir=` that holds
another run is refused before Hydra writes into it, and the files Hydra records show no password.
Imports nothing heavy: it runs before the task, also for `--help`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dlforge.config.secrets import mask_urls
from dlforge.errors import ConfigError
from dlforge.files import replacing

# What a run leaves in its dir: finding one of them, `hydra.run.dir=` names another run's dir.
RUN_FILES = ("lineage.yaml", "metrics.json", "checkpoints", ".hydra")


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


class RunDirCallback(Callback):
    """Hydra's callback (conf/hydra/default.yaml) for what Hydra itself writes into run dirs."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Refuse a `hydra.run.dir=` holding another run, before Hydra writes its `.hydra/` and log there.
        Hydra turns exceptions raised in callbacks into warnings, so the error is printed and exits here."""
        try:
            check_run_dir(config)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from error

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Mask URL passwords in the `.hydra/*.yaml` Hydra has just written (and in a sweep's
        `multirun.yaml`); the job was handed the unmasked config already."""
        hydra = config.hydra
        output_dir = Path(hydra.runtime.output_dir)
        recorded = list((output_dir / hydra.output_subdir).glob("*.yaml")) if hydra.output_subdir is not None else []
        if hydra.mode == RunMode.MULTIRUN:
            sweep_dir = output_dir.parents[len(Path(str(hydra.sweep.subdir)).parts) - 1]
            recorded.append(sweep_dir / "multirun.yaml")
        for path in recorded:
            mask_file(path)


def check_run_dir(config: DictConfig) -> None:
    """ConfigError if this single run would write into another run's dir (`hydra.run.dir=<run dir>`)."""
    hydra = config.hydra
    if hydra.output_subdir is None:
        return  # a DDP rank > 0 that Lightning started in its rank 0's run dir
    given = hydra.run._get_node("dir")._value()
    if isinstance(given, str) and given.startswith("${dlforge.run_dir:"):
        return  # the default: a fresh dir, made here (resolving it again would make another)
    run_dir = Path(str(hydra.run.dir))
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if found:
        raise ConfigError(
            f"hydra.run.dir={run_dir} holds another run ({', '.join(found)}); continue it with "
            f"python src/train.py resume={run_dir}, or give a dir of its own"
        )


def mask_file(path: Path) -> None:
    """Rewrite a recorded YAML file with the passwords of its URLs masked (untouched when it has none)."""
    if not path.is_file():
        return
    text = path.read_text()
    if (masked := mask_urls(text)) != text:
        with replacing(path, "w") as file:
            file.write(masked)


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
