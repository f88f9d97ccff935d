"""Preparing datasets in the data dir.

`python src/prepare.py data=<name>` writes one dataset (public ones are downloaded only with
data.download=true); `all=true` writes every dataset that is made offline from installed packages,
which is the version of `data/` that this repository's data.dvc records.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from dlforge.data.verify import load, prepare_offline
from dlforge.data.versioning import files_read

log = logging.getLogger(__name__)


@dataclass
class PrepareOptions:
    """The top-level keys of `conf/prepare.yaml` that are not config groups."""

    task_name: str
    seed: int
    all: bool


def main(cfg: DictConfig) -> None:
    from dlforge.config.build import build_datamodule
    from dlforge.config.checks import check_fields

    check_fields(cfg, PrepareOptions)
    data_dir = Path(cfg.paths.data_dir).resolve()
    if cfg.all:
        read = prepare_offline(data_dir)
    else:
        datamodule = build_datamodule(cfg)
        with files_read(data_dir) as read:
            load(datamodule)
    log.info(
        f"{len(read)} files under {data_dir} ready; `dvc add data` records the data dir as a new version "
        "(commit data.dvc), `dvc push` stores it in the remote"
    )
