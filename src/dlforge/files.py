"""Writing files whole or not at all."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from dlforge.errors import DiskFull


@contextlib.contextmanager
def replacing(path: Path, mode: str = "wb") -> Iterator[IO]:
    """A temporary file beside `path` (`.<name>.<random>.tmp`) to write, renamed over `path` when the
    block ends without error and deleted otherwise: readers (other runs, sweep workers, a resume after a
    kill) see the old file or the new one, never half of one. A full disk raises `DiskFull`."""
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, mode, **({} if "b" in mode else {"newline": ""})) as file:
            yield file
        os.chmod(temporary, 0o644)  # mkstemp makes it private; run and data dirs are shared
        os.replace(temporary, path)
    except Exception as error:
        if _out_of_space(error):
            raise DiskFull(f"no space left on device writing {path}; what was there is unchanged") from error
        raise
    finally:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)


def _out_of_space(error: BaseException | None) -> bool:
    """Whether `error` or one it arose from is ENOSPC/EDQUOT: torch.save, for one, reports a failed write
    as a RuntimeError ("unexpected pos"), and the disk's own error follows when the file is closed."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        error = error.__cause__ or error.__context__
    return False
