"""Whether the files a run reads are the version of the data dir that data.dvc records, and preparing
datasets into the data dir (written if missing, then read)."""

from __future__ import annotations

import contextlib
import errno
import logging
import tempfile
from dataclasses import replace
from pathlib import Path

from dlforge.data.files import replaced_dirs_kept
from dlforge.data.sources import DataFromSource
from dlforge.data.versioning import (
    DataVersion,
    FileList,
    all_files,
    changed_files,
    dir_md5,
    files_read,
    hash_files,
    keep_recorded_files,
    recorded_files,
    recorded_md5,
)
from dlforge.errors import DataError, some

log = logging.getLogger(__name__)

_FIXES = (
    "`dvc pull` gets the recorded version, `dvc add data` records this one, verify_data=false trains on it unverified"
)
_CANNOT_WRITE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


class DataDirNotWritable(DataError):
    """The data must be prepared where it cannot be written: `dvc pull` would not help."""


def load(datamodule) -> None:
    """What a run does to its data before the first step: write it if missing, then read it."""
    try:
        datamodule.prepare_data()
    except OSError as error:
        if error.errno not in _CANNOT_WRITE:
            raise
        raise DataDirNotWritable(
            f"cannot write {error.filename} ({error.strerror}), where the data must be prepared: "
            "make the data dir writable, or set paths.data_dir to a writable dir"
        ) from error
    datamodule.setup("fit")


def prepare_offline(data_dir: Path) -> set[Path]:
    """Prepare every data option of conf/data/ whose source needs no download; returns the files read."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from dlforge.config import CONF_DIR
    from dlforge.config.build import build_datamodule

    # A task runs inside Hydra; code that trains through `train()` in-process (tests, notebooks) may not.
    hydra = GlobalHydra.instance().is_initialized()
    composing = contextlib.nullcontext() if hydra else initialize_config_dir(str(CONF_DIR), version_base="1.3")
    # Its own scope for replaced dirs: inside a run's verification, those of `data_dir` are not the run's.
    with composing, files_read(data_dir) as read, _random_state_kept(), replaced_dirs_kept():
        for option in sorted(path.stem for path in (CONF_DIR / "data").glob("*.yaml")):
            cfg = compose("train", overrides=[f"data={option}", f"paths.data_dir={data_dir}"])
            datamodule: DataFromSource = build_datamodule(cfg)
            if not datamodule.source.needs_download:
                load(datamodule)
    return read


@contextlib.contextmanager
def _random_state_kept():
    """Training runs may prepare other datasets first (`_rebuilt_recorded_files`): whatever those
    draw must not change the run's random numbers."""
    import random

    import numpy as np
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(python_state)
    np.random.set_state(numpy_state)


def verified_data(datamodule, data_dir: Path, root_dir: Path, verify: bool) -> DataVersion:
    """Prepare and load the run's data from `data_dir`, then check the files it read against the version
    in `root_dir`'s data.dvc (unless not `verify`). Files that data.dvc records with other contents stop
    the run with a DataError naming them and the fix; files it does not list (a dataset the user fetched)
    are trained on and returned as `unrecorded`. When the run stops, any prepared dir that this preparation
    replaced is put back as it was."""
    data_dir, root_dir = data_dir.resolve(), root_dir.resolve()
    with replaced_dirs_kept() as replaced:
        try:
            return _verified_data(datamodule, data_dir, root_dir, verify)
        except BaseException:
            replaced.restore()
            raise


def _verified_data(datamodule, data_dir: Path, root_dir: Path, verify: bool) -> DataVersion:
    recorded = recorded_md5(root_dir) if verify else None  # a broken data.dvc stops the run before anything is written
    failure = None
    with files_read(data_dir) as opened:
        try:
            load(datamodule)
        except Exception as error:  # noqa: BLE001 - a changed file may not even load: report the change
            failure = error
    read = hash_files(data_dir, sorted(path for path in opened if path.is_file()))
    version = DataVersion(str(data_dir), len(read), dir_md5(read), recorded=None, verified=False)
    if not verify:
        if failure is not None:
            raise failure
        log.warning(f"data not checked against data.dvc (verify_data=false): {len(read)} files, md5 {version.md5}")
        return version

    known = recorded_files(root_dir, recorded) or _rebuilt_recorded_files(root_dir, data_dir, recorded)
    where = _shown(data_dir, root_dir)
    if known is None:
        raise DataError(
            f"{where}/ is not the version data.dvc records ({recorded}), whose file list is not in DVC's cache "
            f"(no `dvc pull` yet) and could not be rebuilt from the datasets here: {_FIXES}"
        ) from failure
    changed = changed_files(known, read)
    if changed:
        changed_shown = some(f"{where}/{path}" for path in changed)
        raise DataError(
            f"the data this run reads is not the version in data.dvc: changed: {changed_shown}; {_FIXES}"
        ) from failure
    if failure is not None:
        missing = sum(not (data_dir / path).is_file() for path in known)
        if isinstance(failure, DataError) and not isinstance(failure, DataDirNotWritable) and missing:
            raise DataError(
                f"{failure}; data.dvc records {missing} files missing from {where}: `dvc pull` fetches them"
            ) from failure
        raise failure
    unrecorded = {path: md5 for path, md5 in read.items() if path not in known}
    if unrecorded:
        log.warning(
            f"data: {some(f'{where}/{path}' for path in unrecorded)} not in data.dvc ({recorded}): training on them "
            "unverified, their md5 recorded in lineage.yaml; `dvc add data` records them (then commit data.dvc)"
        )
        return replace(version, recorded=recorded, unrecorded=unrecorded)
    log.info(f"data: {len(read)} files read from {where} are as data.dvc records ({recorded})")
    return replace(version, recorded=recorded, verified=True)


def _rebuilt_recorded_files(root_dir: Path, data_dir: Path, recorded: str) -> FileList | None:
    """data.dvc's file list when DVC's cache lacks it (a clone that has not pulled): the whole data dir,
    or the datasets made offline from installed packages, if either hashes to the recorded version. Those
    are made in a temporary dir: the data dir holds the user's files and the run's, nothing else."""
    log.info(f"data.dvc's file list is not in DVC's cache: rebuilding it from {_shown(data_dir, root_dir)}")
    with tempfile.TemporaryDirectory(prefix="dlforge-offline-data-") as made:
        made = Path(made).resolve()
        for directory, paths in ((data_dir, lambda: all_files(data_dir)), (made, lambda: prepare_offline(made))):
            try:
                files = hash_files(directory, sorted(paths()))
            except FileNotFoundError:
                if directory == made:
                    raise
                continue  # the data dir: another process's staged dir, swapped in while listed, is not a version
            if dir_md5(files) == recorded:
                keep_recorded_files(root_dir, recorded, files)
                return files
    return None


def _shown(data_dir: Path, root_dir: Path) -> str:
    return str(data_dir.relative_to(root_dir)) if data_dir.is_relative_to(root_dir) else str(data_dir)
