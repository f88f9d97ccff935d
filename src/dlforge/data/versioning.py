"""Which files a run reads from the data dir, and whether they are the version `data.dvc` records.

DVC names a file by the md5 of its bytes and a directory by the md5 of its file list (the JSON of
`[{"md5": ..., "relpath": ...}]` sorted by path) plus ".dir"; `data.dvc` holds that hash of `data/`,
and the file list itself sits in DVC's cache once `dvc add` or `dvc pull` has run. The same hashes
are computed here without importing DVC, which costs more than the check. Files are hashed in full
every time: a change that keeps size and mtime is caught too.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dlforge.errors import DataError
from dlforge.files import replacing

DVC_FILE = "data.dvc"
FileList = dict[str, str]  # path relative to the data dir -> md5


@dataclass(frozen=True)
class DataVersion:
    """The data a run read: `files` files under `data_dir` whose DVC hash as a directory is `md5`;
    `recorded` is the hash in data.dvc they were checked against (None if they were not), `verified`
    whether all of them are as it records, `unrecorded` the md5 of each one it does not list."""

    data_dir: str
    files: int
    md5: str
    recorded: str | None
    verified: bool
    unrecorded: FileList = field(default_factory=dict)


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def dir_md5(files: FileList) -> str:
    listing = [{"md5": md5, "relpath": relpath} for relpath, md5 in sorted(files.items())]
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode()).hexdigest() + ".dir"


def hash_files(data_dir: Path, paths: Iterable[Path]) -> FileList:
    return {path.relative_to(data_dir).as_posix(): file_md5(path) for path in paths}


def all_files(data_dir: Path) -> Iterator[Path]:
    return (path for path in data_dir.rglob("*") if path.is_file())


# --- the files a datamodule reads --------------------------------------------------------------------

_open_logs: list[tuple[str, set[Path]]] = []  # (data dir, files read under it) of each open `files_read`
_hooked = False


def _record_reads(event: str, args: tuple) -> None:
    if event != "open" or not _open_logs:
        return
    path, mode, flags = args
    if isinstance(path, int):
        return
    writes = set(mode) & set("wax+") if isinstance(mode, str) else flags & (os.O_WRONLY | os.O_RDWR)
    if writes or (isinstance(flags, int) and flags & os.O_DIRECTORY):  # a dir opened to lock it is no data
        return
    path = os.path.realpath(os.fsdecode(path))
    for data_dir, read in _open_logs:
        if path.startswith(data_dir + os.sep):
            read.add(Path(path))


@contextlib.contextmanager
def files_read(data_dir: Path) -> Iterator[set[Path]]:
    """Collects the files under `data_dir` opened for reading inside the block, whatever code opens
    them (numpy, torchvision, tokenizers' JSON ...), through a Python audit hook (PEP 578)."""
    global _hooked
    if not _hooked:
        sys.addaudithook(_record_reads)  # audit hooks cannot be removed; idle outside this block
        _hooked = True
    entry = (os.path.realpath(data_dir), set())
    _open_logs.append(entry)
    try:
        yield entry[1]
    finally:
        _open_logs.remove(entry)


# --- what data.dvc records ---------------------------------------------------------------------------


def recorded_md5(root_dir: Path) -> str:
    path = root_dir / DVC_FILE
    if not path.is_file():
        raise DataError(
            f"{path} not found, so the data cannot be checked: `dvc add data` versions the data dir "
            "(then commit data.dvc), or train with verify_data=false"
        )
    try:
        md5 = yaml.safe_load(path.read_text())["outs"][0]["md5"]
    except (yaml.YAMLError, UnicodeDecodeError, LookupError, TypeError):
        md5 = None
    if not isinstance(md5, str) or not re.fullmatch(r"[0-9a-f]{32}\.dir", md5):
        raise DataError(
            f"{path} does not record a version of the data dir (no `outs: [{{md5: <32 hex digits>.dir}}]`): "
            "`git checkout data.dvc` restores the committed one, `dvc add data` records the data dir anew"
        )
    return md5


def recorded_files(root_dir: Path, md5: str) -> FileList | None:
    """The file list of version `md5`: from DVC's cache, or as kept by `keep_recorded_files`."""
    for path in (_cache_dir(root_dir) / "files" / "md5" / md5[:2] / md5[2:], _kept_list(root_dir, md5)):
        if path.is_file():
            return {entry["relpath"]: entry["md5"] for entry in json.loads(path.read_text())}
    return None


def keep_recorded_files(root_dir: Path, md5: str, files: FileList) -> None:
    """Keep a file list found to hash to `md5` (DVC's cache lacked it) beside DVC's own scratch files."""
    path = _kept_list(root_dir, md5)
    listing = [{"md5": file_md5, "relpath": relpath} for relpath, file_md5 in sorted(files.items())]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path, "w") as file:
            json.dump(listing, file)
    except OSError:  # a repository the user cannot write: the list is rebuilt next time instead
        pass


def _kept_list(root_dir: Path, md5: str) -> Path:
    return root_dir / ".dvc" / "tmp" / "dlforge-file-lists" / md5


def _cache_dir(root_dir: Path) -> Path:
    """DVC's cache dir: `cache.dir` of .dvc/config.local or .dvc/config (relative to .dvc/), else the default."""
    config = configparser.ConfigParser()
    config.read([root_dir / ".dvc" / "config", root_dir / ".dvc" / "config.local"])
    return (root_dir / ".dvc" / config.get("cache", "dir", fallback="cache")).resolve()


def changed_files(recorded: FileList, read: FileList) -> list[str]:
    """The files read that data.dvc records with other contents."""
    return sorted(path for path, md5 in read.items() if path in recorded and recorded[path] != md5)
