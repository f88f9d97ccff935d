"""Writing files whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def replacing(path: Path, mode: str = "wb") -> Iterator[IO]:
    """A temporary file beside `path` (`.<name>.<random>.tmp`) to write, renamed over `path` when the
    block ends without error and deleted otherwise: readers (other runs, sweep workers, a resume after a
    kill) see the old file or the new one, never half of one."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, mode, **({} if "b" in mode else {"newline": ""})) as file:
            yield file
        os.chmod(temporary, 0o644)  # mkstemp makes it private; run and data dirs are shared
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
