"""Files of the data dir: prepared dirs that replace their previous version whole, the previous one kept
until the run's data is verified, one process at a time, and read errors that name the file."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from dlforge.errors import DataError

log = logging.getLogger(__name__)


class ReplacedDirs(list):
    """(dir, its previous version) of each dir that `staged_dir` replaced while this is open."""

    def restore(self) -> None:
        for target, previous in reversed(self):
            shutil.rmtree(target)
            os.rename(previous / target.name, target)
        self.clear()


_open: list[ReplacedDirs] = []


@contextlib.contextmanager
def replaced_dirs_kept() -> Iterator[ReplacedDirs]:
    """Keeps the previous version of each dir replaced inside the block until it ends, so that it can be
    put back (`ReplacedDirs.restore`) when what replaced it turns out not to be the recorded data."""
    replaced = ReplacedDirs()
    _open.append(replaced)
    try:
        yield replaced
    finally:
        _open.remove(replaced)
        for _, previous in replaced:
            shutil.rmtree(previous, ignore_errors=True)


class _HeldLock:
    def __init__(self):
        self.threads = threading.RLock()
        self.depth = 0  # nested `preparing` blocks of the thread holding it
        self.fd: int | None = None


_locks: dict[str, _HeldLock] = {}
_locks_guard = threading.Lock()


@contextlib.contextmanager
def preparing(target: Path) -> Iterator[None]:
    """Held while `target` is checked and (re)made: other processes (sweep jobs, runs started side by side)
    and threads preparing it wait, then find it made. An exclusive flock on `target`'s parent dir: it
    leaves no lock file in the data dir (which data.dvc versions whole), needs no write access, and is
    released by the kernel when a holder dies. Re-entrant in a thread, so `staged_dir` may nest in it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    parent = os.path.realpath(target.parent)
    with _locks_guard:
        lock = _locks.setdefault(parent, _HeldLock())
    with lock.threads:
        if lock.depth == 0:
            fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as error:  # NFS emulates flock with POSIX locks, which a dir's fd cannot take
                os.close(fd)
                if error.errno not in (errno.EBADF, errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                log.debug(f"cannot lock {parent} ({error.strerror}): preparing it unlocked")
                fd = None
            except BaseException:
                os.close(fd)
                raise
            lock.fd = fd
        lock.depth += 1
        try:
            yield
        finally:
            lock.depth -= 1
            if lock.depth == 0 and lock.fd is not None:
                os.close(lock.fd)  # releases the flock
                lock.fd = None


def prepare_once(directory: Path, made: Callable[[], bool], write: Callable[[], None]) -> None:
    """`write()` unless `made()` says `directory` holds the data already. Checked first without the lock, so a
    read-only data dir prepared before still trains; then again under `preparing(directory)`, since another
    process may have made it while this one waited for the lock."""
    if made():
        return
    with preparing(directory):
        if not made():
            write()


@contextlib.contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """A temporary dir beside `target` to write; it replaces `target` when the block ends without error
    and is deleted otherwise: `target` is never half written, and a failed preparation leaves it as it was.
    The swap happens under `preparing(target)`: two processes swapping at once would fail on each
    other's renames. Hold `preparing` around the check whether `target` needs making as well, so that a
    second process does not make it again and swap it away under a reader."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield staged
        os.chmod(staged, 0o755)  # mkdtemp makes it private; data dirs are shared
        with preparing(target):
            previous = None
            if target.exists():
                previous = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".previous"))
                os.rename(target, previous / target.name)
            os.rename(staged, target)
        if previous is not None:
            if _open:
                _open[-1].append((target, previous))
            else:
                shutil.rmtree(previous)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


@contextlib.contextmanager
def reading(path: Path) -> Iterator[None]:
    """Whatever fails while reading `path` in the block is that file's fault: one DataError naming it."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - numpy, json, tokenizers ... each raise their own kind
        if isinstance(error, DataError):
            raise
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DataError(
            f"{path} is unreadable or corrupt ({reason}): `dvc checkout data` restores the version data.dvc "
            "records, or delete it to have it made anew"
        ) from error


def made_with(directory: Path, settings: dict) -> bool:
    """Whether `directory` holds a dataset made with `settings`: what its `meta.json` records under "settings"
    (generated sets are written once and made anew only when their settings change)."""
    path = directory / "meta.json"
    if not path.is_file():
        return False
    with reading(path):
        return json.loads(path.read_text())["settings"] == settings
