"""A run's lineage: what is needed to explain and repeat it, in one human-readable record.

The record is `lineage.yaml` in the run dir (rewritten at the start, at each resume and at the end),
is embedded in every checkpoint (under `lineage`, beside the resolved config under `run_config`) and
is the W&B run's config. It holds the resolved config and the command-line overrides, the git commit
(and the uncommitted diff, saved as `git.patch` in the run dir), the data's DVC hash (and what the datamodule
says it read, `RecordsData`: a translation corpus' sha256, say), library
versions, hardware, seed, times, the W&B run, checkpoint paths and the final metrics.

Values of environment variables that look like credentials (`*KEY*`, `*TOKEN*`, `*SECRET*`, ...)
are replaced by `<redacted:NAME>` in everything written here, and passwords in URLs by `***`
(`dlforge.config.secrets`), the config embedded in checkpoints included: a run resumed or evaluated
from a checkpoint sees `***` where its config held a password (pass credentials through the environment).

Imports nothing heavy (`reproduce` reads records without torch). A training run keeps its record through
`dlforge.run.training.TrainingRun`; `dlforge.callbacks.lineage.RecordLineage` says when to complete it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import yaml

from dlforge.config import ROOT
from dlforge.config.secrets import mask_urls
from dlforge.files import replacing

FILE_NAME = "lineage.yaml"
PACKAGES = ("torch", "lightning", "hydra-core", "omegaconf", "torchmetrics", "wandb", "numpy", "dlforge")
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
MAX_UNTRACKED_BYTES = 1 << 20  # untracked files larger than this are listed, not put in the patch


@runtime_checkable
class RecordsData(Protocol):
    """A datamodule that knows more about what it read than its files' DVC hash (a corpus it made from what this
    machine has installed, say): the run's record keeps it beside that hash, under `data.read`."""

    def data_record(self) -> dict[str, Any]:
        """Plain data (YAML-safe, small: it is in every checkpoint and the W&B config), once set up for fitting."""
        ...


class Lineage:
    """The record of one run. Only the global-zero process writes it (`begin`, `finish`)."""

    def __init__(self, run_dir: str | Path, record: dict[str, Any]):
        self.run_dir = Path(run_dir)
        self.record = record

    @classmethod
    def start(cls, run_dir: str | Path, config: dict[str, Any], overrides: list[str]) -> Lineage:
        return cls(
            run_dir,
            {
                "status": "running",
                "run_dir": str(Path(run_dir).resolve()),
                "command": _command_line(),
                "overrides": list(overrides),
                "seed": config.get("seed"),
                "started": _now(),
                "ended": None,
                "error": None,
                "git": None,  # filled by `begin`
                "data": None,  # set_data
                "versions": _versions(),
                "hardware": None,
                "wandb": None,
                "mlflow": None,
                "checkpoints": {},
                "metrics": {},
                "resumes": [],
                "config": config,
            },
        )

    @classmethod
    def resume(
        cls,
        run_dir: str | Path,
        config: dict[str, Any],
        checkpoint: dict[str, Any],
        checkpoint_path: Path,
        overrides: list[str],
    ) -> Lineage:
        """The run's record as last written (or as embedded in the checkpoint), with this resume added."""
        path = Path(run_dir) / FILE_NAME
        record = read(path) if path.is_file() else {**checkpoint.get("lineage", {}), "config": config}
        record["resumes"] = [
            *record.get("resumes", []),
            {
                "started": _now(),
                "checkpoint": str(checkpoint_path),
                "step": checkpoint.get("global_step"),
                "epoch": checkpoint.get("epoch"),
                "command": _command_line(),
                "overrides": list(overrides),
            },
        ]
        record.update(status="running", ended=None, error=None, run_dir=str(Path(run_dir).resolve()), config=config)
        return cls(run_dir, record)

    @property
    def wandb_id(self) -> str | None:
        return (self.record.get("wandb") or {}).get("id")

    @property
    def mlflow_run_id(self) -> str | None:
        return (self.record.get("mlflow") or {}).get("run_id")

    def set_data(self, version: dict[str, Any]) -> None:
        """What data the run read (`dlforge.data.versioning.DataVersion`): its DVC hash (`md5`), the
        hash data.dvc records (`recorded`), whether the files are all as it records (`verified`) and the
        md5 of each file read that it does not list (`unrecorded`)."""
        self.record["data"] = version

    def set_data_read(self, datamodule: Any) -> None:
        """What the datamodule says about the data it read (`RecordsData`), if it says anything: `data.read`."""
        if isinstance(datamodule, RecordsData):
            self.record["data"] = {**(self.record["data"] or {}), "read": datamodule.data_record()}

    def begin(self, hardware: dict[str, Any], wandb_run=None, mlflow_run: dict[str, str] | None = None) -> None:
        """Complete the record as training starts (git state, hardware, W&B and MLflow runs) and write it."""
        resumes = self.record["resumes"]
        git = git_state(ROOT, self.run_dir, f"git-resume-{len(resumes)}.patch" if resumes else "git.patch")
        if resumes:
            resumes[-1]["git"] = git
        else:
            self.record["git"] = git
        self.record["hardware"] = hardware
        if wandb_run is not None:
            self.record["wandb"] = {
                "id": wandb_run.id,
                "path": wandb_run.path,
                "project": wandb_run.project,
                "group": wandb_run.group or None,
                "mode": "offline" if wandb_run.offline else "online",
                "local_dir": str(Path(wandb_run.dir).parent),
            }
        if mlflow_run is not None:
            self.record["mlflow"] = mlflow_run
        self.write(wandb_run)

    def embedded(self) -> dict[str, Any]:
        """What every checkpoint carries: the resolved config, from which models are rebuilt, and the rest."""
        return {
            "run_config": mask_urls(self.record["config"]),
            "lineage": redact({key: value for key, value in self.record.items() if key != "config"}),
        }

    def finish(
        self,
        status: str,
        metrics: dict[str, Any] | None = None,
        checkpoints: dict[str, Any] | None = None,
        error: str | None = None,
        wandb_run=None,
    ) -> None:
        """Close the record: `finished` (with final metrics), `pruned` (a sweep's trial its pruner stopped, with
        the metrics it reached and why), `preempted` or `interrupted` (with the error)."""
        self.record.update(status=status, ended=_now(), error=error)
        if metrics is not None:
            self.record["metrics"] = metrics
        if checkpoints is not None:
            self.record["checkpoints"] = checkpoints
        self.write(wandb_run)

    def write(self, wandb_run=None) -> None:
        """`lineage.yaml` (replaced atomically) and the W&B run config (nested, as in the file)."""
        record = redact(self.record)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with replacing(self.run_dir / FILE_NAME, "w") as file:
            yaml.dump(record, file, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)
        if wandb_run is not None:
            wandb_run.config.update(record, allow_val_change=True)


def read(path: str | Path) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


class _Dumper(yaml.SafeDumper):
    """Block style, except lists of plain values (overrides, a confusion matrix's rows) on one line."""

    def represent_list(self, data):
        flow = all(isinstance(item, (int, float, bool, type(None))) for item in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _Dumper.represent_list)


def hardware(trainer) -> dict[str, Any]:
    import torch

    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpus": [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())],
        "accelerator": type(trainer.accelerator).__name__.removesuffix("Accelerator").lower(),
        "strategy": type(trainer.strategy).__name__,
        "devices": trainer.num_devices,
        "num_nodes": trainer.num_nodes,
        "world_size": trainer.world_size,
        "precision": trainer.precision,
        "host": platform.node(),
    }


def redact(value: Any, secrets: dict[str, str] | None = None) -> Any:
    """`value` (nested dicts, lists, strings) with credential-like environment values and URL passwords
    blanked out."""
    if secrets is None:
        secrets = {name: text for name, text in os.environ.items() if SECRET_NAME.search(name) and len(text) >= 8}
    if isinstance(value, str):
        for name, text in secrets.items():
            value = value.replace(text, f"<redacted:{name}>")
        return mask_urls(value)
    if isinstance(value, dict):
        return {key: redact(item, secrets) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item, secrets) for item in value]
    return value


def git_state(source_root: Path, run_dir: Path, patch_name: str) -> dict[str, Any] | None:
    """`git_snapshot`, with the diff (when dirty) saved as `run_dir/patch_name`."""
    state, patch = git_snapshot(source_root)
    if state is not None and state["dirty"]:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / patch_name).write_text(redact(patch))
        state["patch"] = patch_name
    return state


def git_snapshot(source_root: Path) -> tuple[dict[str, Any] | None, str]:
    """Commit, branch and dirty flag of the code's checkout, and the diff against the commit
    (untracked files included, up to MAX_UNTRACKED_BYTES each); (None, "") outside a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=source_root, capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
    except (OSError, subprocess.CalledProcessError):
        return None, ""
    state = {
        "commit": commit,
        "branch": git("rev-parse", "--abbrev-ref", "HEAD").strip(),
        "dirty": False,
        "patch": None,
        "untracked_not_in_patch": [],
    }
    if not git("status", "--porcelain", "--untracked-files=all").strip():
        return state, ""
    state["dirty"] = True
    patch = git("diff", "--binary", "HEAD")
    for name in git("ls-files", "--others", "--exclude-standard", "-z").split("\0"):
        if not name:
            continue
        if (source_root / name).stat().st_size > MAX_UNTRACKED_BYTES:
            state["untracked_not_in_patch"].append(name)
            continue
        # `git diff --no-index` exits with 1 when the files differ, which here they always do
        patch += subprocess.run(
            ["git", "diff", "--binary", "--no-index", "--", "/dev/null", name],
            cwd=source_root,
            capture_output=True,
            text=True,
        ).stdout
    return state, patch


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str | None]:
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _command_line() -> str:
    return shlex.join([Path(sys.executable).name, *sys.argv])


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
