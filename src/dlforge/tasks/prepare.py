"""Preparing datasets in the data dir.

`python src/prepare.py data=<name>` writes one dataset (public ones are downloaded only with
data.download=true); `all=true` writes every dataset that is made offline from installed packages,
which is the version of `data/` that this repository's data.dvc records; `only_if_missing=true` writes
nothing into a data dir that exists. Either way the run dir gets `data.json`: the number of files in the
data dir and its DVC hash, the version that dvc.yaml's stages depend on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from dlforge.data.verify import load, prepare_offline
from dlforge.data.versioning import all_files, dir_md5, hash_files
from dlforge.files import replacing

log = logging.getLogger(__name__)


@dataclass
class PrepareOptions:
    """The top-level keys of `conf/prepare.yaml` that are not config groups."""

    task_name: str
    seed: int
    all: bool
    only_if_missing: bool


def main(cfg: DictConfig) -> None:
    from dlforge.config.build import build_datamodule
    from dlforge.config.checks import check_fields

    check_fields(cfg, PrepareOptions)
    data_dir = Path(cfg.paths.data_dir).resolve()
    if cfg.only_if_missing and data_dir.exists():
        log.info(f"{data_dir} exists: nothing prepared (only_if_missing=true)")
    elif cfg.all:
        prepare_offline(data_dir)
    else:
        load(build_datamodule(cfg))
    files = hash_files(data_dir, sorted(all_files(data_dir)))
    version = {"files": len(files), "md5": dir_md5(files)}
    with replacing(Path(cfg.paths.output_dir) / "data.json", "w") as file:
        json.dump(version, file, indent=2)
    log.info(
        f"{len(files)} files in {data_dir} (md5 {version['md5']}); `dvc add data` records the data dir as a new "
        "version (commit data.dvc), `dvc push` stores it in the remote"
    )
