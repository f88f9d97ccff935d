"""What an offline W&B run recorded, read from its transaction log (`run-<id>.wandb`).

wandb 0.31 writes neither `files/config.yaml` nor `files/wandb-summary.json` for offline runs and no
longer ships a Python reader for its `.wandb` files; `wandb sync` uploads exactly the records of that
file. It is a LevelDB-style log (a 7-byte file header, then 32 KiB blocks of records, each with a
7-byte header: CRC, length, type FULL/FIRST/MIDDLE/LAST) of protobuf `Record` messages, whose
classes wandb still ships (`wandb.proto.wandb_internal_pb2`). Reading them is what the upload would
see; nothing here depends on wandb's internal Python code.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = struct.Struct("<IHB")  # crc32, length, record type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    run_id: str = ""
    project: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    notes: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    artifacts: list[Any] = field(default_factory=list)
    finished: bool = False  # an exit record: the run was finished, not killed


def offline_runs(directory: Path) -> list[Path]:
    """The offline run dirs under `directory/wandb`."""
    return sorted((directory / "wandb").glob("offline-run-*"))


def read_offline_run(run_dir: Path, wait: float = 30.0) -> OfflineRun:
    """The run's records. wandb-core writes the log from its own process, which can flush it after `finish()`
    has returned (under load, CI once read the header alone): the file is read again until it holds the exit
    record, for up to `wait` seconds."""
    (log_file,) = run_dir.glob("run-*.wandb")
    deadline = time.monotonic() + wait
    while not (run := _read(log_file)).finished and time.monotonic() < deadline:
        time.sleep(0.2)
    return run


def _read(log_file: Path) -> OfflineRun:
    from wandb.proto import wandb_internal_pb2

    run = OfflineRun()
    for payload in _payloads(log_file.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            info = record.run
            run.run_id, run.project, run.group, run.job_type = info.run_id, info.project, info.run_group, info.job_type
            run.tags, run.notes = list(info.tags), info.notes
            _apply(run.config, info.config.update)
        elif kind == "config":
            _apply(run.config, record.config.update)
        elif kind == "summary":
            _apply(run.summary, record.summary.update)
        elif kind == "history":
            row: dict[str, Any] = {}
            _apply(row, record.history.item)
            run.history.append(row)
        elif kind == "files":
            run.files += [item.path for item in record.files.files]
        elif kind == "artifact":
            run.artifacts.append(record.artifact)
        elif kind == "exit":
            run.finished = True
    return run


def _apply(target: dict[str, Any], items) -> None:
    """Config, summary and history items: a key (or a nested key path) and a JSON value."""
    for item in items:
        path = list(item.nested_key) or [item.key]
        node = target
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = json.loads(item.value_json)


def _payloads(data: bytes):
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1, f"not a W&B transaction log ({ident!r}, {magic:#x})"
    position, pending = 7, b""
    while position + HEADER.size <= len(data):
        left_in_block = BLOCK - position % BLOCK
        if left_in_block < HEADER.size:  # block trailer: zero padding
            position += left_in_block
            continue
        checksum, length, kind = HEADER.unpack_from(data, position)
        if kind == 0:  # zero padding up to the end of the block (or of the file)
            position += left_in_block
            continue
        if position + HEADER.size + length > len(data):  # a record still being written
            return
        chunk = data[position + HEADER.size : position + HEADER.size + length]
        assert zlib.crc32(bytes([kind]) + chunk) == checksum, f"corrupt record at byte {position}"
        position += HEADER.size + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            yield pending
            pending = b""
